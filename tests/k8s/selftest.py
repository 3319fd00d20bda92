#!/usr/bin/env python3
"""Self-test for tests/k8s/apiserver.py: starts the double and checks each behaviour with
http.client + ssl verifying against the generated CA. Last line: "N passed, M failed"."""

import base64
import http.client
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from urllib.parse import quote

HERE = os.path.dirname(os.path.abspath(__file__))
SLICES = "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices"
PODS = "/api/v1/namespaces/default/pods"
SERVICES = "/api/v1/namespaces/default/services"
EVENTS = "/apis/events.k8s.io/v1/namespaces/default/events"
SSAR = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
SEL = "?labelSelector=" + quote("kubernetes.io/service-name=web", safe="")


class Server:
    def __init__(self, *extra):
        self.tmp = tempfile.mkdtemp(prefix="apiserver-selftest-")
        self.dir = os.path.join(self.tmp, "sa")
        self.log = open(os.path.join(self.tmp, "stderr.log"), "w+")
        self.proc = subprocess.Popen([sys.executable, os.path.join(HERE, "apiserver.py"), "--dir", self.dir, *extra],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True)
        line = self.proc.stdout.readline()
        m = re.fullmatch(r"READY port=(\d+)\n", line)
        assert m, "bad READY line %r" % line
        self.port = int(m.group(1))
        self.host = "::1" if "--ipv6" in extra else "127.0.0.1"
        self.ctx = ssl.create_default_context(cafile=os.path.join(self.dir, "ca.crt"))

    @property
    def token(self):
        with open(os.path.join(self.dir, "token")) as f:
            return f.read()

    def cmd(self, **c):
        self.proc.stdin.write(json.dumps(c) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def ok(self, **c):
        r = self.cmd(**c)
        assert r["ok"], r
        return r

    def conn(self, host=None, timeout=10):
        return http.client.HTTPSConnection(host or self.host, self.port, context=self.ctx, timeout=timeout)

    def get(self, path, token=True, host=None, timeout=10):
        c = self.conn(host, timeout)
        hdrs = {"Authorization": "Bearer " + (self.token if token is True else token)} if token else {}
        c.request("GET", path, headers=hdrs)
        r = c.getresponse()
        return r, r.read()

    def post(self, path, obj, expect, token=True):
        c = self.conn()
        hdrs = {"Content-Type": "application/json"}
        if token:
            hdrs["Authorization"] = "Bearer " + self.token
        c.request("POST", path, body=json.dumps(obj).encode(), headers=hdrs)
        r = c.getresponse()
        body = r.read()
        assert r.status == expect, (r.status, body)
        return json.loads(body)

    def json(self, path, expect=200, **kw):
        r, body = self.get(path, **kw)
        assert r.status == expect, (r.status, body)
        return json.loads(body)

    def watch(self, path, timeout=10):
        c = self.conn(timeout=timeout)
        c.request("GET", path, headers={"Authorization": "Bearer " + self.token})
        r = c.getresponse()
        return c, r

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            rc = self.proc.wait(10)
            assert rc == 0, "exit code %s" % rc
        self.log.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def raw_exchange(s, path):
    """One request over TLS driven through MemoryBIOs, so transport errors show as they are
    (Python's SSLSocket reports a TCP RST as a plain EOF). -> (raw bytes, "reset"|"eof"|"close_notify")."""
    sock = socket.create_connection((s.host, s.port), timeout=10)
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = s.ctx.wrap_bio(inc, out, server_hostname=s.host)

    def flush():
        d = out.read()
        if d:
            sock.sendall(d)

    def pump():
        d = sock.recv(65536)
        if not d:
            inc.write_eof()
            return False
        inc.write(d)
        return True

    try:
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                flush()
                pump()
        tls.write(("GET %s HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer %s\r\n\r\n"
                   % (path, s.token)).encode())
        flush()
        data = b""
        while True:
            try:
                data += tls.read(65536)
            except ssl.SSLWantReadError:
                if not pump():
                    return data, "eof"
            except ssl.SSLZeroReturnError:
                return data, "close_notify"
            except ssl.SSLEOFError:
                return data, "eof"
    except ConnectionResetError:
        return data, "reset"
    finally:
        sock.close()


def dechunk(body):
    """Decode as much of a chunked body as is there (the stream may have been cut)."""
    out = b""
    while b"\r\n" in body:
        size, rest = body.split(b"\r\n", 1)
        n = int(size, 16)
        out += rest[:n]
        body = rest[n + 2:]
        if n == 0 or len(rest) < n:
            break
    return out


def event(r):
    line = r.readline()
    assert line, "stream ended"
    return json.loads(line)


def setup_web(s, slices=1, pnra=False, family="IPv4"):
    s.ok(cmd="add_pod", name="web-1", ip="10.0.0.5", uid="uid-web-1", grace=30)
    s.ok(cmd="add_pod", name="web-2", ip="10.0.0.6")
    names = s.ok(cmd="add_service", name="web", slices=slices, publishNotReadyAddresses=pnra,
                 ip_family=family)["slices"]
    s.ok(cmd="add_endpoint", service="web", slice=0, pod="web-1")
    s.ok(cmd="add_endpoint", service="web", slice=slices - 1, pod="web-2")
    return names


TESTS = []


def test(fn):
    TESTS.append(fn)
    return fn


# ---------------------------------------------------------------------------------------------
@test
def files_and_tls(s):
    for f in ("ca.crt", "token", "namespace"):
        assert os.path.getsize(os.path.join(s.dir, f)) > 0, f
    assert open(os.path.join(s.dir, "namespace")).read() == "default"
    for host in ("127.0.0.1", "localhost"):  # SAN IP:127.0.0.1 and DNS:localhost verify
        r, _ = s.get(PODS + "/x", host=host)
        assert r.status == 404
    out = subprocess.run(["openssl", "x509", "-in", os.path.join(s.dir, "server.crt"), "-noout", "-ext",
                          "subjectAltName"], capture_output=True, text=True).stdout
    assert "IP Address:127.0.0.1" in out and "IP Address:0:0:0:0:0:0:0:1" in out and "DNS:localhost" in out, out
    bad = ssl.create_default_context()  # system roots do not trust our CA
    c = http.client.HTTPSConnection("127.0.0.1", s.port, context=bad, timeout=5)
    try:
        c.request("GET", "/")
        raise AssertionError("TLS verified without the CA")
    except ssl.SSLCertVerificationError:
        pass


@test
def unauthorized(s):
    want = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": "Unauthorized",
            "reason": "Unauthorized", "code": 401}
    assert s.json(SLICES, 401, token=None) == want
    assert s.json(SLICES, 401, token="wrong") == want
    r, body = s.get(PODS + "/web-1", token="wrong")
    assert r.status == 401 and r.getheader("Content-Type") == "application/json"


@test
def token_rotation(s):
    old = s.token
    new = s.ok(cmd="rotate_token")["token"]
    assert new != old and s.token == new
    s.json(SLICES, 401, token=old)
    s.json(SLICES, 200, token=new)
    newer = s.ok(cmd="rotate_token", accept_old=True)["token"]
    s.json(SLICES, 200, token=new)  # grace: previous token still accepted
    s.json(SLICES, 200, token=newer)
    s.ok(cmd="revoke_old_tokens")
    s.json(SLICES, 401, token=new)


@test
def list_shape_and_selectors(s):
    names = setup_web(s, slices=2)
    s.ok(cmd="add_service", name="other", slices=1)
    lst = s.json(SLICES + SEL)
    assert lst["kind"] == "EndpointSliceList" and lst["apiVersion"] == "discovery.k8s.io/v1"
    assert lst["metadata"]["resourceVersion"].isdigit()
    assert sorted(i["metadata"]["name"] for i in lst["items"]) == sorted(names)
    for it in lst["items"]:
        assert "kind" not in it and "apiVersion" not in it  # as the real apiserver serializes typed lists
        m = it["metadata"]
        assert m["generateName"] == "web-" and m["namespace"] == "default" and m["uid"] and m["creationTimestamp"]
        assert m["labels"]["endpointslice.kubernetes.io/managed-by"] == "endpointslice-controller.k8s.io"
        assert m["ownerReferences"][0]["kind"] == "Service" and m["ownerReferences"][0]["name"] == "web"
        assert "endpoints.kubernetes.io/last-change-trigger-time" in m["annotations"]
        assert it["addressType"] == "IPv4" and it["ports"] == [{"name": "http", "protocol": "TCP", "port": 8080}]
    ep = [e for i in lst["items"] for e in i["endpoints"] if e["targetRef"]["name"] == "web-1"][0]
    assert ep == {"addresses": ["10.0.0.5"], "conditions": {"ready": True, "serving": True, "terminating": False},
                  "targetRef": {"kind": "Pod", "namespace": "default", "name": "web-1", "uid": "uid-web-1"},
                  "nodeName": "node-1", "zone": "zone-a"}, ep
    count = lambda sel: len(s.json(SLICES + "?labelSelector=" + quote(sel, safe=""))["items"])
    assert count("kubernetes.io/service-name==web") == 2
    assert count("kubernetes.io/service-name!=web") == 1
    assert count("kubernetes.io/service-name") == 3
    assert count("!kubernetes.io/service-name") == 0
    assert count("kubernetes.io/service-name=web,endpointslice.kubernetes.io/managed-by") == 2
    assert count("kubernetes.io/service-name=web,nope=1") == 0
    assert count("kubernetes.io/service-name in (web,other)") == 3
    assert count("kubernetes.io/service-name notin (web)") == 1
    assert len(s.json(SLICES)["items"]) == 3
    assert len(s.json("/apis/discovery.k8s.io/v1/endpointslices")["items"]) == 3
    assert s.json(SLICES + "?labelSelector=a%3D%3D%3Db", 400)["reason"] == "BadRequest"
    # limit/continue: pages, and the RV stays that of the first page
    p1 = s.json(SLICES + "?limit=2")
    assert len(p1["items"]) == 2 and p1["metadata"]["remainingItemCount"] == 1
    p2 = s.json(SLICES + "?limit=2&continue=" + quote(p1["metadata"]["continue"]))
    assert len(p2["items"]) == 1 and "continue" not in p2["metadata"]
    assert p2["metadata"]["resourceVersion"] == p1["metadata"]["resourceVersion"]


@test
def get_slice_and_404(s):
    names = setup_web(s)
    obj = s.json(SLICES + "/" + names[0])
    assert obj["kind"] == "EndpointSlice" and obj["apiVersion"] == "discovery.k8s.io/v1"
    assert obj["metadata"]["name"] == names[0]
    assert s.json(SLICES + "/nope", 404) == {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": 'endpointslices.discovery.k8s.io "nope" not found', "reason": "NotFound",
        "details": {"name": "nope", "group": "discovery.k8s.io", "kind": "endpointslices"}, "code": 404}
    assert s.json("/apis/discovery.k8s.io/v1/namespaces/default/nonsense", 404)["reason"] == "NotFound"


@test
def pod_get_and_delete(s):
    setup_web(s)
    pod = s.json(PODS + "/web-1")
    m = pod["metadata"]
    assert pod["kind"] == "Pod" and pod["apiVersion"] == "v1" and m["uid"] == "uid-web-1"
    assert "deletionTimestamp" not in m and pod["spec"]["terminationGracePeriodSeconds"] == 30
    assert pod["status"]["podIP"] == "10.0.0.5" and pod["status"]["podIPs"] == [{"ip": "10.0.0.5"}]
    before = time.time()
    r = s.ok(cmd="delete_pod", name="web-1", grace_seconds=45)
    m2 = s.json(PODS + "/web-1")["metadata"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", m2["deletionTimestamp"]), m2
    ts = time.mktime(time.strptime(m2["deletionTimestamp"], "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
    assert before + 44 <= ts <= time.time() + 46, (ts, before)
    assert m2["deletionGracePeriodSeconds"] == 45 and r["deletionTimestamp"] == m2["deletionTimestamp"]
    assert int(m2["resourceVersion"]) > int(m["resourceVersion"]) and m2["generation"] == m["generation"] + 1
    assert s.json(PODS + "/nope", 404)["message"] == 'pods "nope" not found'


@test
def rbac_forbidden(s):
    setup_web(s)
    s.ok(cmd="rbac", endpointslices=False, pods=False)
    st = s.json(SLICES + SEL, 403)
    assert st == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                  "message": 'endpointslices.discovery.k8s.io is forbidden: User "system:serviceaccount:default:default" '
                             'cannot list resource "endpointslices" in API group "discovery.k8s.io" in the namespace "default"',
                  "reason": "Forbidden", "details": {"group": "discovery.k8s.io", "kind": "endpointslices"},
                  "code": 403}, st
    assert "cannot watch resource" in s.json(SLICES + "?watch=1", 403)["message"]
    assert s.json(PODS + "/web-1", 403)["message"] == (
        'pods "web-1" is forbidden: User "system:serviceaccount:default:default" cannot get resource "pods" '
        'in API group "" in the namespace "default"')
    s.ok(cmd="rbac", endpointslices=["list"], pods=True)
    s.json(SLICES, 200)
    s.json(SLICES + "?watch=1", 403)
    s.json(PODS + "/web-1", 200)


@test
def watch_events_after_rv_filtered(s):
    setup_web(s)
    s.ok(cmd="add_service", name="other", slices=1)
    lst = s.json(SLICES + SEL)
    rv = lst["metadata"]["resourceVersion"]
    c, r = s.watch(SLICES + SEL + "&watch=1&resourceVersion=" + rv)
    assert r.status == 200 and r.getheader("Transfer-Encoding") == "chunked"
    assert r.getheader("Content-Type") == "application/json"
    s.ok(cmd="wait_watches", count=1)
    s.ok(cmd="add_pod", name="other-1", ip="10.0.0.9")
    s.ok(cmd="add_endpoint", service="other", pod="other-1")  # filtered out by the selector
    r1 = s.ok(cmd="delete_pod", name="web-1")
    ev = event(r)
    assert ev["type"] == "MODIFIED", ev
    o = ev["object"]
    assert o["kind"] == "EndpointSlice" and o["apiVersion"] == "discovery.k8s.io/v1"  # watch objects carry kind
    assert int(o["metadata"]["resourceVersion"]) > int(r1["resourceVersion"]) > int(rv)
    assert o["metadata"]["labels"]["kubernetes.io/service-name"] == "web"
    ep = [e for e in o["endpoints"] if e["targetRef"]["name"] == "web-1"][0]
    # podToEndpoint: terminating pod -> ready=false, serving keeps PodReady, terminating=true
    assert ep["conditions"] == {"ready": False, "serving": True, "terminating": True}, ep
    assert int(o["metadata"]["resourceVersion"]) > int(rv) and o["metadata"]["generation"] >= 2
    c.close()


@test
def watch_without_rv_sends_synthetic_added(s):
    names = setup_web(s, slices=2)
    c, r = s.watch(SLICES + SEL + "&watch=true")
    got = sorted(event(r)["object"]["metadata"]["name"] for _ in names)
    assert got == sorted(names)
    s.ok(cmd="set_pod_ready", name="web-2", ready=False)
    ev = event(r)
    ep = [e for e in ev["object"]["endpoints"] if e["targetRef"]["name"] == "web-2"][0]
    assert ev["type"] == "MODIFIED" and ep["conditions"] == {"ready": False, "serving": False, "terminating": False}
    c.close()


@test
def publish_not_ready_keeps_ready(s):
    setup_web(s, pnra=True)
    s.ok(cmd="delete_pod", name="web-1")
    lst = s.json(SLICES + SEL)
    ep = [e for i in lst["items"] for e in i["endpoints"] if e["targetRef"]["name"] == "web-1"][0]
    assert ep["conditions"] == {"ready": True, "serving": True, "terminating": True}, ep


@test
def delayed_flip(s):
    setup_web(s)
    rv = s.json(SLICES + SEL)["metadata"]["resourceVersion"]
    c, r = s.watch(SLICES + SEL + "&watch=1&resourceVersion=" + rv)
    s.ok(cmd="wait_watches", count=1)
    t0 = time.monotonic()
    rep = s.ok(cmd="delete_pod", name="web-1", flip_after_ms=300)
    assert time.monotonic() - t0 < 0.25 and "slices" not in rep  # reply does not wait for the flip
    assert "deletionTimestamp" in s.json(PODS + "/web-1")["metadata"]
    ev = event(r)
    assert time.monotonic() - t0 >= 0.29, time.monotonic() - t0
    ep = [e for e in ev["object"]["endpoints"] if e["targetRef"]["name"] == "web-1"][0]
    assert ep["conditions"]["terminating"] is True and ep["conditions"]["ready"] is False
    c.close()


@test
def nil_conditions(s):
    setup_web(s)
    s.ok(cmd="add_pod", name="web-3", ip="10.0.0.7")
    s.ok(cmd="add_endpoint", service="web", pod="web-3", omit_conditions=True)
    s.ok(cmd="set_conditions", service="web", pod="web-1", ready=None, serving=True, terminating=None)
    eps = {e["targetRef"]["name"]: e for i in s.json(SLICES + SEL)["items"] for e in i["endpoints"]}
    assert eps["web-3"]["conditions"] == {}
    assert eps["web-1"]["conditions"] == {"serving": True}
    s.ok(cmd="remove_endpoint", service="web", pod="web-3")
    eps = {e["targetRef"]["name"] for i in s.json(SLICES + SEL)["items"] for e in i["endpoints"]}
    assert eps == {"web-1", "web-2"}


@test
def resource_versions_monotonic(s):
    names = setup_web(s, slices=2)
    seen = []
    for _ in range(3):
        s.ok(cmd="set_pod_ready", name="web-1", ready=False)
        s.ok(cmd="set_pod_ready", name="web-1", ready=True)
        lst = s.json(SLICES + SEL)
        seen.append(int(lst["metadata"]["resourceVersion"]))
        for it in lst["items"]:
            assert int(it["metadata"]["resourceVersion"]) <= seen[-1]
            assert isinstance(it["metadata"]["generation"], int)
    assert seen == sorted(seen) and len(set(seen)) == 3, seen
    pod_rv = int(s.json(PODS + "/web-1")["metadata"]["resourceVersion"])
    assert pod_rv <= seen[-1]
    assert len(names) == 2


@test
def bookmarks(s):
    setup_web(s)
    rv = s.json(SLICES + SEL)["metadata"]["resourceVersion"]
    c, r = s.watch(SLICES + SEL + "&watch=1&allowWatchBookmarks=true&resourceVersion=" + rv)
    c2, r2 = s.watch(SLICES + SEL + "&watch=1&resourceVersion=" + rv + "&timeoutSeconds=1")
    s.ok(cmd="wait_watches", count=2)
    s.ok(cmd="add_pod", name="zzz", ip="10.0.0.99")  # bumps the RV, no slice event
    b = s.ok(cmd="bookmark")
    assert b["watchers"] == 1 and b["sent"] is True
    s.ok(cmd="set_pod_ready", name="web-1", ready=False)  # after the reply: the BOOKMARK is already sent
    ev = event(r)
    assert ev == {"type": "BOOKMARK", "object": {"kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
                                                 "metadata": {"resourceVersion": b["resourceVersion"]}}}, ev
    assert event(r)["type"] == "MODIFIED"
    # the watcher without allowWatchBookmarks got the event but no BOOKMARK, then a clean end
    assert [json.loads(x)["type"] for x in r2.read().splitlines()] == ["MODIFIED"]
    s.ok(cmd="config", bookmark_style="typed")
    s.ok(cmd="bookmark")
    obj = event(r)["object"]
    assert obj["metadata"]["creationTimestamp"] is None and obj["endpoints"] is None and obj["addressType"] == ""
    c.close()
    s.ok(cmd="config", bookmark_interval_ms=100, bookmark_style="minimal")
    rv = s.json(SLICES + SEL)["metadata"]["resourceVersion"]
    c, r = s.watch(SLICES + SEL + "&watch=1&allowWatchBookmarks=1&resourceVersion=" + rv)
    t0 = time.monotonic()
    assert event(r)["type"] == "BOOKMARK" and event(r)["type"] == "BOOKMARK"
    assert 0.15 <= time.monotonic() - t0 < 2
    c.close()


@test
def timeout_seconds_ends_cleanly(s):
    setup_web(s)
    rv = s.json(SLICES + SEL)["metadata"]["resourceVersion"]
    t0 = time.monotonic()
    c, r = s.watch(SLICES + SEL + "&watch=1&timeoutSeconds=1&resourceVersion=" + rv)
    assert r.read() == b"" and 0.9 <= time.monotonic() - t0 < 3
    # keep-alive: the same connection serves the next request
    c.request("GET", SLICES, headers={"Authorization": "Bearer " + s.token})
    assert c.getresponse().status == 200
    c.close()
    c, r = s.watch(SLICES + "?watch=1&resourceVersion=" + rv)
    s.ok(cmd="wait_watches", count=1)
    assert s.ok(cmd="close_watches")["closed"] is True
    assert s.ok(cmd="stats")["active_watches"] == 0
    assert r.read() == b""


@test
def compaction_410(s):
    setup_web(s)
    old = s.json(SLICES + SEL)["metadata"]["resourceVersion"]
    s.ok(cmd="set_pod_ready", name="web-1", ready=False)
    comp = s.ok(cmd="compact")["compacted"]
    c, r = s.watch(SLICES + SEL + "&watch=1&resourceVersion=" + old)
    assert r.status == 200  # the real server: HTTP 200, then an ERROR event, then EOF
    ev = event(r)
    assert ev == {"type": "ERROR", "object": {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "too old resource version: %s (%s)" % (old, comp), "reason": "Expired", "code": 410}}, ev
    assert r.read() == b""
    c.close()
    # a watch from the compaction point itself is fine
    c, r = s.watch(SLICES + SEL + "&watch=1&timeoutSeconds=1&resourceVersion=" + comp)
    assert r.status == 200 and r.read() == b""
    s.ok(cmd="config", watch_410="http", expired_reason="Gone")
    st = s.json(SLICES + SEL + "&watch=1&resourceVersion=" + old, 410)
    assert st["reason"] == "Gone" and st["code"] == 410
    # list: an expired continue token gives 410 Expired with a fresh continue token
    s.ok(cmd="add_service", name="more", slices=3)
    p1 = s.json(SLICES + "?limit=1")
    s.ok(cmd="set_pod_ready", name="web-1", ready=True)
    s.ok(cmd="compact")
    st = s.json(SLICES + "?limit=1&continue=" + quote(p1["metadata"]["continue"]), 410)
    assert st["reason"] == "Expired" and st["metadata"]["continue"], st
    assert st["message"].startswith("The provided continue parameter is too old")
    tok = json.loads(base64.b64decode(st["metadata"]["continue"]))
    assert tok["rv"] == -1
    assert s.json(SLICES + "?limit=1&continue=" + quote(st["metadata"]["continue"]))["items"]
    assert s.json(SLICES + "?resourceVersion=%s&resourceVersionMatch=Exact" % old, 410)["reason"] == "Expired"


@test
def fault_status_and_counts(s):
    setup_web(s)
    s.ok(cmd="fault", kind="list", fault="status:503", count=2)
    for _ in range(2):
        st = s.json(SLICES, 503)
        assert st["kind"] == "Status" and st["reason"] == "ServiceUnavailable" and st["code"] == 503
    s.json(SLICES, 200)
    s.ok(cmd="fault", kind="pod", fault="status:500", count=0)  # until cleared
    for _ in range(3):
        assert s.json(PODS + "/web-1", 500)["reason"] == "InternalError"
    s.ok(cmd="clear_faults")
    s.json(PODS + "/web-1", 200)
    s.ok(cmd="fault", kind="watch", fault="status:403")
    assert s.json(SLICES + "?watch=1", 403)["reason"] == "Forbidden"
    assert s.cmd(cmd="fault", kind="list", fault="explode")["ok"] is False


@test
def fault_hang(s):
    setup_web(s)
    s.ok(cmd="fault", kind="list", fault="hang")
    t0 = time.monotonic()
    try:
        s.get(SLICES, timeout=0.5)
        raise AssertionError("hang answered")
    except (socket.timeout, TimeoutError):
        pass
    assert time.monotonic() - t0 >= 0.45
    s.json(SLICES, 200)  # count=1: next request is normal
    s.ok(cmd="fault", kind="watch", fault="hang")
    try:
        s.get(SLICES + "?watch=1", timeout=0.3)
        raise AssertionError("hang answered")
    except (socket.timeout, TimeoutError):
        pass


@test
def fault_reset(s):
    setup_web(s)
    s.ok(cmd="fault", kind="pod", fault="reset")
    data, how = raw_exchange(s, PODS + "/web-1")
    assert (data, how) == (b"", "reset"), (data, how)
    s.json(PODS + "/web-1", 200)
    s.ok(cmd="fault", kind="list", fault="reset")
    try:
        s.get(SLICES)
        raise AssertionError("no reset")
    except (ConnectionResetError, ssl.SSLEOFError, http.client.RemoteDisconnected):
        pass


@test
def fault_garbage(s):
    setup_web(s)
    s.ok(cmd="fault", kind="list", fault="garbage")
    r, body = s.get(SLICES)
    assert r.status == 200
    try:
        json.loads(body)
        raise AssertionError("garbage parsed")
    except json.JSONDecodeError:
        pass


@test
def fault_watch_stream(s):
    setup_web(s)
    rv = s.json(SLICES + SEL)["metadata"]["resourceVersion"]
    s.ok(cmd="fault", kind="watch", fault="reset_mid_stream")
    data, how = raw_exchange(s, SLICES + SEL + "&watch=1&resourceVersion=" + rv)
    assert how == "reset", how
    head, body = data.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 OK") and b"Transfer-Encoding: chunked" in head
    lines = dechunk(body).split(b"\n")
    first = json.loads(lines[0])
    assert first["type"] in ("MODIFIED", "ADDED") and first["object"]["kind"] == "EndpointSlice"
    assert len(lines) == 2 and lines[1] and not lines[1].endswith(b"}"), lines[1:]  # half an event, no newline
    s.ok(cmd="fault", kind="watch", fault="garbage_event")
    c, r = s.watch(SLICES + SEL + "&watch=1&resourceVersion=" + rv)
    try:
        json.loads(r.readline())
        raise AssertionError("garbage event parsed")
    except json.JSONDecodeError:
        pass
    s.ok(cmd="set_pod_ready", name="web-1", ready=False)
    assert event(r)["type"] == "MODIFIED"  # the stream goes on after the bad line
    c.close()


@test
def fault_slow_headers(s):
    setup_web(s)
    s.ok(cmd="fault", kind="get-pod", fault="slow_headers:300")
    t0 = time.monotonic()
    s.json(PODS + "/web-1")
    assert time.monotonic() - t0 >= 0.3
    t0 = time.monotonic()
    s.json(PODS + "/web-1")
    assert time.monotonic() - t0 < 0.3


@test
def fault_drip_tls(s):
    setup_web(s)
    s.ok(cmd="fault", kind="connect", fault="drip_tls:200", count=1)
    assert s.cmd(cmd="fault", kind="connect", fault="hang")["ok"] is False  # only drip_tls acts on connects
    # A real ClientHello from a memory BIO, then the raw bytes that come back.
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = s.ctx.wrap_bio(inc, out, server_hostname=s.host)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    sock = socket.create_connection((s.host, s.port), timeout=5)
    sock.sendall(out.read())
    t0 = time.monotonic()
    got = b""
    while len(got) < 7:
        got += sock.recv(100)
    assert got[:5] == b"\x16\x03\x03\x40\x00", got
    assert time.monotonic() - t0 >= 0.3, "two bytes of the body took under 2 x 200 ms"
    sock.close()
    s.json(PODS + "/web-1", 200)  # count=1: the next connection is served
    assert s.ok(cmd="stats")["counts"]["get-pod"] == 1  # a dripped connection is no request


@test
def fault_drip_tls_body(s):
    setup_web(s)
    s.ok(cmd="fault", kind="connect", fault="drip_tls_body:100", count=1)
    c = s.conn(timeout=5)
    t0 = time.monotonic()
    c.request("GET", PODS + "/web-1", headers={"Authorization": "Bearer " + s.token})
    r = c.getresponse()  # the head comes at full speed
    assert r.status == 200 and time.monotonic() - t0 < 1.0
    c.sock.settimeout(0.5)  # no record completes within 0.5 s: its bytes come one per 100 ms
    try:
        r.read(1)
        raise AssertionError("a body byte arrived")
    except (socket.timeout, TimeoutError):
        pass
    c.close()
    assert s.json(PODS + "/web-1")["metadata"]["name"] == "web-1"  # count=1: the next one is served


@test
def fault_drip_body(s):
    setup_web(s)
    s.ok(cmd="fault", kind="get-pod", fault="drip_body:20")
    t0 = time.monotonic()
    pod = s.json(PODS + "/web-1")
    assert pod["metadata"]["name"] == "web-1"
    took = time.monotonic() - t0
    body_len = len(json.dumps(pod, separators=(",", ":"))) + 1
    assert took >= (body_len - 1) * 0.02 * 0.9, (took, body_len)
    rv = s.json(SLICES + SEL)["metadata"]["resourceVersion"]
    s.ok(cmd="fault", kind="watch", fault="drip_body:5")
    c, r = s.watch(SLICES + SEL + "&watch=1&resourceVersion=" + rv)
    s.ok(cmd="set_pod_ready", name="web-1", ready=False)
    t0 = time.monotonic()
    assert event(r)["type"] == "MODIFIED"  # one-byte chunks still make the event
    assert time.monotonic() - t0 >= 0.5
    c.close()


@test
def restart_with_gap(s):
    setup_web(s)
    rv = s.json(SLICES + SEL)["metadata"]["resourceVersion"]
    cut = {}
    t = threading.Thread(target=lambda: cut.update(r=raw_exchange(s, SLICES + SEL + "&watch=1&resourceVersion=" + rv)))
    t.start()
    s.ok(cmd="wait_watches", count=1)
    s.proc.stdin.write(json.dumps({"cmd": "restart", "gap_ms": 700, "init_429_ms": 400}) + "\n")
    s.proc.stdin.flush()
    t.join(10)
    # The open watch is cut: no terminating chunk, no TLS close_notify.
    data, how = cut["r"]
    assert data.startswith(b"HTTP/1.1 200 OK") and not data.endswith(b"0\r\n\r\n"), data
    assert how in ("eof", "reset"), how
    refused = False
    t0 = time.monotonic()
    while time.monotonic() - t0 < 0.5:
        try:
            socket.create_connection((s.host, s.port), timeout=1).close()
        except ConnectionRefusedError:
            refused = True
            break
    assert refused, "the port still accepts during the gap"
    back = json.loads(s.proc.stdout.readline())
    assert back["ok"] and back["down_ms"] >= 700, back
    # The state survived; LIST and WATCH get 429 while the cache initialises; GET works.
    assert s.json(PODS + "/web-1")["metadata"]["name"] == "web-1"
    r, body = s.get(SLICES + SEL)
    assert r.status == 429 and r.getheader("Retry-After") == "1", (r.status, body)
    assert json.loads(body)["message"] == "storage is (re)initializing"
    time.sleep(0.5)  # past init_429_ms: nothing to wait on, the server's clock decides
    items = s.json(SLICES + SEL)["items"]
    assert items[0]["endpoints"][0]["targetRef"]["name"] == "web-1"
    # A watch from before the restart is too old for the new watch cache.
    c, r = s.watch(SLICES + SEL + "&watch=1&resourceVersion=" + rv)
    ev = event(r)
    assert ev["type"] == "ERROR" and ev["object"]["code"] == 410, ev
    c.close()
    c, r = s.watch(SLICES + SEL + "&watch=1&resourceVersion=" + back["resourceVersion"])
    s.ok(cmd="set_pod_ready", name="web-1", ready=False)
    assert event(r)["type"] == "MODIFIED"
    c.close()


@test
def bulk_namespace(s):
    made = s.ok(cmd="add_bulk", services=120, endpoints=5)
    assert (made["slices"], made["endpoints"]) == (120, 600), made
    big = s.ok(cmd="add_bulk", services=1, endpoints=250, prefix="big")
    assert big["slices"] == 3
    page = s.json(SLICES + "?limit=100")
    assert len(page["items"]) == 100 and page["metadata"]["continue"]
    seen, pages = len(page["items"]), 1
    while page["metadata"].get("continue"):
        page = s.json(SLICES + "?limit=100&continue=" + quote(page["metadata"]["continue"], safe=""))
        seen, pages = seen + len(page["items"]), pages + 1
    assert (seen, pages) == (123, 2), (seen, pages)
    sizes = sorted(len(i["endpoints"]) for i in s.json(SLICES + "?labelSelector=kubernetes.io%2Fservice-name%3Dbig-0")["items"])
    assert sizes == [50, 100, 100], sizes
    ips = [e["addresses"][0] for i in s.json(SLICES)["items"] for e in i["endpoints"]]
    assert len(set(ips)) == 850 and not any(ip.startswith("10.0.0.") for ip in ips)


@test
def stats(s):
    names = setup_web(s)
    s.ok(cmd="reset_stats")
    s.json(SLICES + SEL)
    s.json(SLICES + "/" + names[0])
    s.json(PODS + "/web-1")
    s.json("/version", 404)
    c, r = s.watch(SLICES + SEL + "&watch=1")
    event(r)
    st = s.ok(cmd="wait_requests", kind="watch", count=1)
    st = s.ok(cmd="stats")
    assert st["counts"] == {"list": 1, "watch": 1, "get-slice": 1, "get-pod": 1, "list-pod": 0, "watch-pod": 0,
                            "get-service": 0, "create-event": 0, "ssar": 0, "other": 1}, st["counts"]
    assert st["active_watches"] == 1
    assert [(q["method"], q["path"]) for q in st["requests"]][:2] == [
        ("GET", SLICES + SEL), ("GET", SLICES + "/" + names[0])]
    c.close()
    s.ok(cmd="reset_stats")
    assert sum(s.ok(cmd="stats")["counts"].values()) == 0
    assert s.cmd(cmd="wait_requests", kind="list", count=1, timeout_ms=50)["ok"] is False


@test
def ipv6_slices_and_pod_watch(s):
    s.ok(cmd="add_pod", name="v6-1", ips=["fd00::5", "10.0.0.5"])
    s.ok(cmd="add_service", name="v6", ip_family="dual")
    s.ok(cmd="add_endpoint", service="v6", slice=0, pod="v6-1")
    s.ok(cmd="add_endpoint", service="v6", slice=1, pod="v6-1")
    items = s.json(SLICES + "?labelSelector=kubernetes.io%2Fservice-name%3Dv6")["items"]
    fam = {i["addressType"]: i["endpoints"][0]["addresses"] for i in items}
    assert fam == {"IPv6": ["fd00::5"], "IPv4": ["10.0.0.5"]}, fam
    c, r = s.watch(PODS + "?watch=1&fieldSelector=metadata.name%3Dv6-1")
    assert event(r)["object"]["metadata"]["name"] == "v6-1"
    s.ok(cmd="delete_pod", name="v6-1", grace_seconds=5)
    ev = event(r)
    assert ev["type"] == "MODIFIED" and ev["object"]["metadata"]["deletionGracePeriodSeconds"] == 5
    s.ok(cmd="remove_pod", name="v6-1")
    assert event(r)["type"] == "DELETED"
    s.json(PODS + "/v6-1", 404)
    c.close()


@test
def services(s):
    setup_web(s, pnra=True)
    s.ok(cmd="add_service", name="edge", type="LoadBalancer")
    web = s.json(SERVICES + "/web")
    assert web["kind"] == "Service" and web["apiVersion"] == "v1" and web["metadata"]["name"] == "web"
    sp = web["spec"]
    assert sp["type"] == "ClusterIP" and sp["publishNotReadyAddresses"] is True and sp["selector"] == {"app": "web"}
    assert sp["clusterIP"] == sp["clusterIPs"][0] and sp["ports"][0]["targetPort"] == 8080
    edge = s.json(SERVICES + "/edge")
    assert edge["spec"]["type"] == "LoadBalancer" and "publishNotReadyAddresses" not in edge["spec"]  # omitempty
    assert edge["spec"]["ports"][0]["nodePort"] >= 30000 and edge["status"]["loadBalancer"]["ingress"]
    assert s.json(SERVICES + "/nope", 404)["message"] == 'services "nope" not found'
    assert len(s.json(SERVICES)["items"]) == 2
    s.ok(cmd="rbac", services=False)
    assert s.json(SERVICES + "/web", 403)["message"] == (
        'services "web" is forbidden: User "system:serviceaccount:default:default" cannot get resource "services" '
        'in API group "" in the namespace "default"')
    assert s.ok(cmd="stats")["counts"]["get-service"] == 4


def review(resource, verb, group="", name=""):
    return {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": {"namespace": "default", "verb": verb, "group": group,
                                            "resource": resource, "name": name}}}


@test
def self_subject_access_review(s):
    ok = s.post(SSAR, review("endpointslices", "watch", "discovery.k8s.io"), 201)
    assert ok["kind"] == "SelfSubjectAccessReview" and ok["status"]["allowed"] is True and ok["status"]["reason"]
    assert ok["spec"]["resourceAttributes"]["verb"] == "watch"
    assert s.post(SSAR, review("endpointslices", "watch"), 201)["status"]["allowed"] is False  # wrong group
    s.ok(cmd="rbac", endpointslices=["list"], events=False)
    no = s.post(SSAR, review("endpointslices", "watch", "discovery.k8s.io"), 201)
    assert no["status"] == {"allowed": False}, no  # RBAC: no opinion, no reason, `denied` unset
    assert s.post(SSAR, review("endpointslices", "list", "discovery.k8s.io"), 201)["status"]["allowed"] is True
    assert s.post(SSAR, review("events", "create", "events.k8s.io"), 201)["status"]["allowed"] is False
    assert s.post(SSAR, {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview", "spec": {}},
                  422)["reason"] == "Invalid"
    assert s.post(SSAR, review("pods", "get"), 401, token=False)["reason"] == "Unauthorized"
    s.ok(cmd="rbac", selfsubjectaccessreviews=False)
    assert s.post(SSAR, review("pods", "get"), 403)["message"] == (
        'selfsubjectaccessreviews.authorization.k8s.io is forbidden: User "system:serviceaccount:default:default" '
        'cannot create resource "selfsubjectaccessreviews" in API group "authorization.k8s.io" at the cluster scope')
    r, _ = s.get(SSAR)
    assert r.status == 405
    assert s.ok(cmd="stats")["counts"]["ssar"] == 8


def new_event(**over):
    ev = {"apiVersion": "events.k8s.io/v1", "kind": "Event",
          "metadata": {"name": "web-1.17a0b2c3d4e5f607", "namespace": "default"},
          "eventTime": "2026-11-25T15:03:11.123456Z", "reportingController": "lastcall",
          "reportingInstance": "web-1", "action": "Drain", "reason": "Drained", "type": "Normal",
          "regarding": {"apiVersion": "v1", "kind": "Pod", "namespace": "default", "name": "web-1", "uid": "u"},
          "note": "drain ended after 812 ms"}
    ev.update(over)
    return ev


@test
def events_create_and_validate(s):
    made = s.post(EVENTS, new_event(), 201)
    assert made["metadata"]["uid"] and made["metadata"]["resourceVersion"] and made["reason"] == "Drained"
    assert s.post(EVENTS, new_event(), 409)["reason"] == "AlreadyExists"
    bad = s.post(EVENTS, new_event(metadata={"name": "x.1"}, type="Info", action="", note="n" * 1025,
                                   reportingController="not a name"), 422)
    fields = sorted(c["field"] for c in bad["details"]["causes"])
    assert fields == ["action", "message", "reportingController", "type"], bad
    assert s.post(EVENTS, new_event(metadata={"name": "x.2"}, eventTime="2026-11-25T15:03:11.123Z"),
                  400)["reason"] == "BadRequest"  # MicroTime wants six digits
    assert s.post(EVENTS, new_event(metadata={"name": "x.3"}, deprecatedCount=1), 422)["reason"] == "Invalid"
    assert s.post(EVENTS, new_event(metadata={"name": "x.4", "namespace": "other"}), 400)["code"] == 400
    got = s.ok(cmd="events")["events"]
    assert [e["metadata"]["name"] for e in got] == ["web-1.17a0b2c3d4e5f607"], got
    assert [e["reason"] for e in s.json(EVENTS)["items"]] == ["Drained"]
    s.ok(cmd="rbac", events=False)
    assert "cannot create resource" in s.post(EVENTS, new_event(metadata={"name": "x.5"}), 403)["message"]
    assert len(s.ok(cmd="events")["events"]) == 1
    assert s.ok(cmd="stats")["counts"]["create-event"] == 7


@test
def control_errors(s):
    assert s.cmd(cmd="nope")["ok"] is False
    assert "error" in s.cmd(cmd="delete_pod", name="ghost")
    assert s.cmd(cmd="dump")["ok"] is True


def listen_ipv6():
    try:
        with socket.socket(socket.AF_INET6) as so:
            so.bind(("::1", 0))
        return True
    except OSError:
        return False


def main():
    passed = failed = 0
    runs = [(t, ()) for t in TESTS]
    if listen_ipv6():
        def ipv6_listen(s):
            r, _ = s.get(PODS + "/x")
            assert r.status == 404
        ipv6_listen.__name__ = "ipv6_listen"
        runs.append((ipv6_listen, ("--ipv6",)))
    for fn, extra in runs:
        s = Server(*extra)
        try:
            fn(s)
            s.close()
            passed += 1
            print("ok   %s" % fn.__name__)
        except Exception:
            failed += 1
            print("FAIL %s" % fn.__name__)
            traceback.print_exc(file=sys.stdout)
            s.log.seek(0)
            print("---- server stderr ----\n" + s.log.read()[-4000:])
            try:
                s.proc.kill()
                s.proc.wait(10)
            except Exception:
                pass
            s.log.close()
            shutil.rmtree(s.tmp, ignore_errors=True)
        sys.stdout.flush()
    print("%d passed, %d failed" % (passed, failed))
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
