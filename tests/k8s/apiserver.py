#!/usr/bin/env python3
"""A protocol-faithful Kubernetes API server test double for lastcall.

Standard library only. Serves, over TLS with a fresh CA:

  GET /apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices[/{name}]   (list, watch, get)
  GET /apis/discovery.k8s.io/v1/endpointslices                             (all namespaces)
  GET /api/v1/namespaces/{ns}/pods[/{name}]                                (get, list, watch)
  GET /api/v1/namespaces/{ns}/services[/{name}]                            (get, list, watch)
  POST /apis/events.k8s.io/v1/namespaces/{ns}/events                        (create; GET lists them)
  POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews               (create: answered from `rbac`)

Usage: python3 apiserver.py --dir DIR [--namespace NS] [--ipv6]

DIR receives ca.crt, ca.key, server.crt, server.key, token and namespace, so it looks like
/var/run/secrets/kubernetes.io/serviceaccount. Stdout: one line "READY port=N", then one JSON reply
per JSON command line read on stdin: {"ok":true,...} or {"ok":false,"error":"..."}. Stdin EOF exits 0.
Every API request is logged on stderr.

Control commands ({"cmd": NAME, ...}; "namespace" is optional everywhere, default --namespace):
  add_pod         name, ip | ips[], uid?, grace? (30), ready? (true), node?, labels?    -> uid, resourceVersion
  add_service     name, slices? (1), publishNotReadyAddresses? (false), ip_family? IPv4|IPv6|dual,
                  ports? [{name,protocol,port}], labels?, uid?, type? (ClusterIP | NodePort |
                  LoadBalancer), selector? ({app: name})  -> uid, slices[] (names); the Service object
                  itself is served too [svc]
  add_bulk        services? (1), endpoints? (100 per service), max_per_slice? (100), prefix? ("bulk")
                  -> slices, endpoints: a big namespace (endpoints of pods without Pod objects)
  add_endpoint    service, pod, slice? (index or name, 0), ready?/serving?/terminating? (bool, or null =
                  omit), omit_conditions? (true | ["ready",...]), address?, hostname?, node?, zone?  -> slice
                  (conditions default to what podToEndpoint computes from the pod)
  remove_endpoint service, pod, slice?                                                  -> slices[]
  set_conditions  service, pod, slice?, ready?/serving?/terminating? (bool | null = omit), omit_conditions?
  delete_pod      name, grace_seconds? (pod's grace), flip? (true), flip_after_ms? (0 = before the reply)
                  -> deletionTimestamp, resourceVersion, slices[] (when flipped at once)
  set_pod_ready   name, ready, propagate? (true)                                        -> slices[]
  remove_pod      name, propagate? (true: drop its endpoints too)                       -> slices[]
  delete_slice    service, slice? (0)                                                   -> slice
  rotate_token    accept_old? (false), token? -> token (also written to DIR/token);  revoke_old_tokens
  rbac            endpointslices?, pods?, services?, events?, selfsubjectaccessreviews?: true (every verb
                  the resource serves: get/list/watch, events also create, SSARs only create) | false |
                  ["list","watch",...]; SelfSubjectAccessReviews answer from the same settings [ssar]
  events          -> events[] (every Event created, in order) [events]
  fault           kind: list|watch|get-slice|get-pod (alias pod)|list-pod|watch-pod|other|any,
                  fault: hang|status:<code>|reset|garbage|reset_mid_stream|garbage_event|slow_headers:<ms>
                  |drip_body:<ms> (the answer's body, or each watch event, one byte every <ms>);
                  kind connect, fault drip_tls:<ms>: on new connections, before TLS: read the
                  ClientHello, send a 16 KiB handshake record header, then one byte every <ms>;
                  fault drip_tls_body:<ms>: TLS and the response head at full speed, then every
                  TLS byte of the body one at a time, one every <ms> [drip];
                  count? (1; 0 or less = until cleared);  clear_faults  kind?
  restart         gap_ms? (0), init_429_ms? (0): the apiserver dies and comes back with its state;
                  replies when it listens again [restart]
  compact         rv? (current)                                                         -> compacted
  bookmark        -> watchers (with allowWatchBookmarks), resourceVersion
  close_watches   error? ("expired" | HTTP code: send that ERROR event first)           -> watchers
  stats           -> counts{list,watch,get-slice,get-pod,list-pod,watch-pod,get-service,create-event,ssar,other},
                     requests[{method,path,kind}],
                     active_watches, resourceVersion;   reset_stats
  wait_watches    count? (1), resource?, timeout_ms? (10000)    blocks until that many watches are open
  wait_requests   kind? (list), count? (1), timeout_ms? (10000) blocks until that many requests were counted
  config          bookmark_interval_ms (0 = none), watch_410 ("event" | "http"), expired_reason
                  ("Expired" | "Gone"), bookmark_style ("minimal" | "typed"), default_watch_timeout_s (1800)
  get             resource? (endpointslices), name                                      -> object
  dump            -> resourceVersion, compacted, token, services, objects[]

References (cited as [concepts], [rv], ...):
  [concepts] https://kubernetes.io/docs/reference/using-api/api-concepts/
             (watch, "410 Gone", bookmarks, chunking, resourceVersion semantics)
  [status]   k8s.io/apimachinery/pkg/api/errors/errors.go (NewNotFound, NewForbidden, NewResourceExpired)
  [authz]    k8s.io/apiserver/pkg/endpoints/handlers/responsewriters/errors.go (forbiddenMessage)
  [cacher]   k8s.io/apiserver/pkg/storage/cacher/cacher.go Watch() and watch_cache.go
             getAllEventsSinceLocked(): "too old resource version: %d (%d)" delivered as a watch
             event of type ERROR on an HTTP 200 stream, not as an HTTP error.
  [etcd3]    k8s.io/apiserver/pkg/storage/etcd3/errors.go (expired continue tokens -> 410 Expired)
  [eps]      https://kubernetes.io/docs/concepts/services-networking/endpoint-slices/ and
             k8s.io/endpointslice utils.go podToEndpoint / setEndpointSliceLabels
  [labels]   https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/
  [restart]  A killed kube-apiserver: the kernel closes its sockets (FIN, no TLS close_notify); the new
             process re-initialises its watch cache from etcd at the current RV, so a watch from an
             older RV gets "too old resource version" (410); until the cache is ready, LIST and WATCH
             get 429 "storage is (re)initializing" with Retry-After (KEP-4568, Kubernetes 1.31+).
  [svc]      https://kubernetes.io/docs/reference/kubernetes-api/service-resources/service-v1/ (spec.type
             defaults to ClusterIP; publishNotReadyAddresses is omitted when false, omitempty)
  [ssar]     https://kubernetes.io/docs/reference/kubernetes-api/authorization-resources/self-subject-access-review-v1/
             (create only; status.allowed required, reason optional; the RBAC authorizer gives no
             opinion rather than a denial, so `denied` stays unset) and the bootstrap ClusterRole
             system:basic-user, which lets every authenticated user create them
  [events]   https://kubernetes.io/docs/reference/kubernetes-api/cluster-resources/event-v1/ and
             k8s.io/kubernetes/pkg/apis/core/validation/events.go ValidateEventCreate (events.k8s.io/v1:
             eventTime required, exactly six fractional digits as metav1.MicroTime parses it;
             reportingController a qualified name; reportingInstance, action, reason required, each at
             most 128 characters; type Normal or Warning; note at most 1024; the deprecated fields
             unset); 422 Invalid with one cause per field, as NewInvalid writes it
  [drip]     A slow or hostile peer on the path to the API (the pod network is shared): any number of
             bytes, each within any per-read timeout, never finishing a TLS record or a response.
"""

import argparse
import base64
import copy
import fcntl
import json
import os
import random
import re
import socket
import ssl
import struct
import termios
import subprocess
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlsplit

GROUPS = {  # resource -> (API group, apiVersion, kind)
    "endpointslices": ("discovery.k8s.io", "discovery.k8s.io/v1", "EndpointSlice"),
    "pods": ("", "v1", "Pod"),
    "services": ("", "v1", "Service"),
    "events": ("events.k8s.io", "events.k8s.io/v1", "Event"),
    "selfsubjectaccessreviews": ("authorization.k8s.io", "authorization.k8s.io/v1", "SelfSubjectAccessReview"),
}
VERBS = {  # what `rbac ...: true` grants: the verbs each resource serves here
    "endpointslices": {"get", "list", "watch"}, "pods": {"get", "list", "watch"},
    "services": {"get", "list", "watch"}, "events": {"create", "get", "list", "watch"},
    "selfsubjectaccessreviews": {"create"},
}
MANAGED_BY = "endpointslice-controller.k8s.io"
# utilrand.String alphabet used for generateName suffixes (k8s.io/apimachinery/pkg/util/rand).
NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
KIND_ALIASES = {"pod": "get-pod", "get": "get-slice", "slice": "get-slice"}
KINDS = ("list", "watch", "get-slice", "get-pod", "list-pod", "watch-pod", "get-service", "create-event", "ssar", "other")
REASONS = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
           405: "MethodNotAllowed", 409: "Conflict", 410: "Expired", 422: "Invalid",
           429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable", 504: "Timeout"}


def rfc3339(t=None):
    # metav1.Time marshals as RFC3339 with second precision, e.g. 2026-11-25T14:03:11Z.
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() if t is None else t))


def rfc3339nano(t=None):
    # RFC3339Nano as Go prints it (trailing zeros trimmed); used by last-change-trigger-time [eps].
    t = time.time() if t is None else t
    frac = ("%.9f" % (t % 1))[2:].rstrip("0")
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ("." + frac if frac else "") + "Z"


def dumps(obj):
    return json.dumps(obj, separators=(",", ":"))  # compact, like encoding/json


def status_obj(code, message, reason=None, details=None, cont=None):
    # metav1.Status as the apiserver writes it [status]; empty fields are omitted (omitempty).
    st = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
          "reason": reason or REASONS.get(code, "Unknown")}
    if cont:
        st["metadata"]["continue"] = cont
    if details is not None:
        st["details"] = {k: v for k, v in details.items() if v}
    st["code"] = code
    return st


def qualified(resource):
    group = GROUPS[resource][0]
    return resource + ("." + group if group else "")


def not_found(resource, name):
    return status_obj(404, '%s "%s" not found' % (qualified(resource), name),
                      details={"name": name, "group": GROUPS[resource][0], "kind": resource})


def parse_bool(v):  # strconv.ParseBool, as used for ?watch= and ?allowWatchBookmarks=
    if v in ("1", "t", "T", "true", "TRUE", "True"):
        return True
    if v in ("0", "f", "F", "false", "FALSE", "False", ""):
        return False
    raise ValueError("invalid boolean %r" % v)


class BadRequest(Exception):
    pass


def parse_label_selector(sel):
    """Equality- and set-based selectors [labels]: k=v, k==v, k!=v, k, !k, k in (a,b), k notin (a,b).
    Requirements are comma-separated and ANDed. Returns a predicate over a labels dict."""
    parts, depth, cur = [], 0, ""
    for ch in sel:
        depth += ch == "("
        depth -= ch == ")"
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    reqs = []
    for p in (x.strip() for x in parts):
        if not p:
            continue
        words = p.split()
        if len(words) >= 2 and words[1] in ("in", "notin"):
            rest = p.split(None, 2)[2].strip() if len(words) > 2 else ""
            if not (rest.startswith("(") and rest.endswith(")")):
                raise BadRequest("unable to parse requirement: %s" % p)
            vals = {v.strip() for v in rest[1:-1].split(",")}
            reqs.append((words[0], words[1], vals))
        elif "!=" in p:
            k, v = p.split("!=", 1)
            reqs.append((k.strip(), "!=", v.strip()))
        elif "==" in p:
            k, v = p.split("==", 1)
            reqs.append((k.strip(), "=", v.strip()))
        elif "=" in p:
            k, v = p.split("=", 1)
            reqs.append((k.strip(), "=", v.strip()))
        elif p.startswith("!"):
            reqs.append((p[1:].strip(), "!exists", None))
        else:
            reqs.append((p, "exists", None))
    for k, _, v in reqs:
        if not k or any(c in k for c in " ()!=,"):
            raise BadRequest("unable to parse requirement: invalid label key %r" % k)
        for val in (v if isinstance(v, set) else [v] if v is not None else []):
            if len(val) > 63 or not re.fullmatch(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?", val):
                raise BadRequest("unable to parse requirement: invalid label value: %r" % val)

    def match(labels):
        for k, op, v in reqs:
            have = k in labels
            if op == "=" and labels.get(k) != v:
                return False
            if op == "!=" and have and labels[k] == v:
                return False
            if op == "exists" and not have:
                return False
            if op == "!exists" and have:
                return False
            if op == "in" and labels.get(k) not in v:
                return False
            if op == "notin" and have and labels[k] in v:
                return False
        return True

    return match


def parse_field_selector(sel):
    """Only metadata.name and metadata.namespace, the fields every resource supports."""
    reqs = []
    for p in filter(None, (x.strip() for x in sel.split(","))):
        neg = "!=" in p
        k, v = p.split("!=" if neg else ("==" if "==" in p else "="), 1) if "=" in p else (p, None)
        if k not in ("metadata.name", "metadata.namespace") or v is None:
            raise BadRequest('"%s" is not a known field selector: only "metadata.name", "metadata.namespace"' % k)
        reqs.append((k.split(".")[1], neg, v))
    return lambda meta: all((meta.get(f) == v) != neg for f, neg, v in reqs)


class State:
    """All mutable state, guarded by one lock; `cond` wakes watchers and waiting commands."""

    def __init__(self, directory, namespace):
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.dir = directory
        self.namespace = namespace
        self.rv = 100  # one global, monotonically increasing resourceVersion (etcd revision)
        self.compacted_rv = 0  # watches/continues from an RV below this get 410 [concepts]
        self.objects = {}  # (resource, ns, name) -> object (with kind/apiVersion)
        self.services = {}  # (ns, name) -> {"uid", "publishNotReadyAddresses", "slices": [names], ...}
        self.history = []  # (rv, resource, ns, type, obj, prev_obj); never truncated physically
        self.token = self.new_token()
        self.old_tokens = set()
        self.rbac = {res: set(verbs) for res, verbs in VERBS.items()}
        self.events = []  # every Event created, in order
        self.faults = {}  # kind -> [{"fault": str, "remaining": int (-1 = until cleared)}]
        self.counts = dict.fromkeys(KINDS, 0)
        self.requests = []
        self.watchers = {}  # id -> {"resource", "ns", "bookmarks"}
        self.bookmark_gen = 0
        self.close_gen = 0
        self.close_error = None
        self.config = {"bookmark_interval_ms": 0, "watch_410": "event", "expired_reason": "Expired",
                       "bookmark_style": "minimal", "default_watch_timeout_s": 1800}
        self.stopping = threading.Event()
        # Restarts [restart]: every connection belongs to one incarnation (epoch) of the server.
        self.epoch = 0
        self.conns = set()  # live Handlers, so a restart can cut them
        self.server = None  # the listening Server of the current epoch
        self.ssl_ctx = None
        self.bulk_ips = 0  # add_bulk's address counter
        self.watch_floor_rv = 0  # the re-initialised watch cache starts here: older watch RVs get 410
        self.init_until = 0.0  # monotonic: LIST/WATCH answer 429 until then (cache initialising)

    def dead(self, epoch):
        """The incarnation `epoch` was killed by a restart, or the whole server is stopping."""
        return self.stopping.is_set() or self.epoch != epoch

    def pause(self, epoch, seconds):
        """Sleep `seconds`, cut short when the incarnation dies. Returns False if it did."""
        end = time.monotonic() + seconds
        with self.lock:
            while not self.dead(epoch):
                left = end - time.monotonic()
                if left <= 0:
                    return True
                self.cond.wait(left)
        return False

    @staticmethod
    def new_token():
        return "lastcall-test-" + base64.urlsafe_b64encode(os.urandom(24)).decode().rstrip("=")

    def write_file(self, name, text):
        tmp = os.path.join(self.dir, "." + name + ".tmp")
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, os.path.join(self.dir, name))  # atomic, like the kubelet's projected volume

    # ---- mutation helpers (caller holds the lock) ----
    def bump(self, obj):
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        return self.rv

    def emit(self, resource, etype, obj, prev=None):
        self.history.append((self.rv, resource, obj["metadata"]["namespace"], etype, copy.deepcopy(obj),
                             prev))
        self.cond.notify_all()

    def put(self, resource, obj, etype):
        meta = obj["metadata"]
        key = (resource, meta["namespace"], meta["name"])
        prev = copy.deepcopy(self.objects.get(key))
        self.bump(obj)
        self.objects[key] = obj
        self.emit(resource, etype, obj, prev)

    def remove(self, resource, ns, name):
        obj = self.objects.pop((resource, ns, name))
        self.bump(obj)  # DELETED carries the deletion revision, as the etcd3 watcher does
        self.emit(resource, "DELETED", obj, copy.deepcopy(obj))
        return obj

    def touch_slice(self, sl):
        sl["metadata"]["generation"] += 1
        sl["metadata"]["annotations"]["endpoints.kubernetes.io/last-change-trigger-time"] = rfc3339nano()
        meta = sl["metadata"]
        self.put("endpointslices", sl, "MODIFIED")
        return meta["name"]

    def pod(self, name, ns=None):
        key = ("pods", ns or self.namespace, name)
        if key not in self.objects:
            raise KeyError("no pod %r" % name)
        return self.objects[key]

    def service(self, name, ns=None):
        key = (ns or self.namespace, name)
        if key not in self.services:
            raise KeyError("no service %r" % name)
        return self.services[key]

    def slices_of(self, svc, which=None):
        names = svc["slices"]
        if which is None:
            picked = names
        elif isinstance(which, int):
            picked = [names[which]]
        else:
            picked = [which] if which in names else []
        if not picked:
            raise KeyError("no slice %r" % which)
        return [self.objects[("endpointslices", svc["ns"], n)] for n in picked]

    def pod_conditions(self, pod, svc):
        # podToEndpoint [eps]: serving = PodReady; terminating = DeletionTimestamp != nil;
        # ready = publishNotReadyAddresses || (serving && !terminating).
        serving = any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"]["conditions"])
        terminating = "deletionTimestamp" in pod["metadata"]
        ready = svc["publishNotReadyAddresses"] or (serving and not terminating)
        return {"ready": ready, "serving": serving, "terminating": terminating}

    def reflect_pod(self, pod):
        """Re-run podToEndpoint for every endpoint of `pod`; MODIFIED for each changed slice."""
        changed = []
        for svc in self.services.values():
            for sl in self.slices_of(svc):
                dirty = False
                for ep in sl["endpoints"] or []:
                    if ep.get("targetRef", {}).get("name") == pod["metadata"]["name"]:
                        want = self.pod_conditions(pod, svc)
                        if ep["conditions"] != want:
                            ep["conditions"] = want
                            dirty = True
                if dirty:
                    changed.append(self.touch_slice(sl))
        return changed


STATE = None


# ---------------------------------------------------------------------------------------------
# HTTP side
# ---------------------------------------------------------------------------------------------
class ResetConnection(Exception):
    pass


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and chunked transfer, like the real server

    def setup(self):
        st = STATE
        self.request.settimeout(None)
        with st.lock:
            self.epoch = st.epoch
            st.conns.add(self)
            # A "connect" fault acts before TLS, on the raw connection.
            self.connect_fault = self.take_fault(st, ("connect",))
        if self.connect_fault is None:
            # TLS handshake happens here, in the connection's own thread, not in the accept loop.
            self.request = self.server.ssl_ctx.wrap_socket(self.request, server_side=True)
        super().setup()

    def handle(self):
        try:
            if self.connect_fault and self.connect_fault.startswith("drip_tls_body"):
                ms = int(self.connect_fault.partition(":")[2] or 1500)
                self.rfile = self.wfile = DripTLS(self.request, self.server.ssl_ctx, ms, self.epoch)
                self.log_req_raw("connection: fault=%s (TLS done, records after the response head dripped)"
                                 % self.connect_fault)
                return super().handle()
            if self.connect_fault:
                return self.drip_tls(self.connect_fault)
            super().handle()
        except (ResetConnection, ConnectionError, ssl.SSLError, OSError):
            self.close_connection = True

    def finish(self):
        try:
            super().finish()
        except OSError:
            pass
        with STATE.lock:
            STATE.conns.discard(self)
        self.connection.close()  # the server only holds the detached raw socket

    def kill(self):
        """What the kernel does to the connections of a killed apiserver: FIN, no TLS close_notify,
        no terminating chunk. The handler's thread sees its socket fail and ends."""
        try:
            socket.socket.shutdown(self.request, socket.SHUT_RDWR)  # TCP level, past the TLS layer
        except OSError:
            pass

    def drip_tls(self, fault):
        """A peer that drips bytes [drip]: it reads the ClientHello, answers with the header of a
        16 KiB handshake record, then sends one byte of it every <ms> (default 1500)."""
        ms = int(fault.partition(":")[2] or 1500)
        raw = self.request
        raw.settimeout(10)
        hello = raw.recv(65536)
        self.auth, self.kind, self.command, self.path = "-", "connect", "TLS", "-"
        self.log_req("DRIP", "fault=%s client_hello=%dB" % (fault, len(hello)))
        raw.sendall(b"\x16\x03\x03\x40\x00")  # ContentType handshake, legacy version 3.3, length 16384
        for _ in range(16384):
            if not STATE.pause(self.epoch, ms / 1000.0):
                break
            raw.sendall(b"\x00")
        raise ResetConnection()

    def drip_write(self, data):
        """Writes `data` one byte per TLS record, one every self.drip_ms [drip]."""
        for i in range(len(data)):
            self.wfile.write(data[i:i + 1])
            if i + 1 < len(data) and not STATE.pause(self.epoch, self.drip_ms / 1000.0):
                raise ResetConnection()

    def log_message(self, fmt, *args):  # silence the default access log; we log our own line
        pass

    def send_response(self, code, message=None):
        self.send_response_only(code, message)
        self.send_header("Date", self.date_time_string())  # no Server header, like kube-apiserver

    def do_GET(self):
        self.dispatch()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_GET

    # ---- plumbing ----
    def log_req_raw(self, text):
        sys.stderr.write("apiserver: %s\n" % text)
        sys.stderr.flush()

    def log_req(self, status, note=""):
        sys.stderr.write("apiserver: %s %s auth=%s kind=%s -> %s%s\n" % (
            self.command, self.path, self.auth, self.kind, status, (" " + note) if note else ""))
        sys.stderr.flush()

    def common_headers(self):
        self.send_header("Audit-Id", str(uuid.uuid4()))
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Content-Type", "application/json")

    def reply(self, code, obj, note=""):
        body = (obj if isinstance(obj, bytes) else (dumps(obj) + "\n").encode())
        self.send_response(code)
        self.common_headers()
        if code == 429:
            self.send_header("Retry-After", "1")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            if self.drip_ms:
                self.log_req(code, "dripping %d bytes, one every %dms" % (len(body), self.drip_ms))
                self.drip_write(body)
            else:
                self.wfile.write(body)
        self.log_req(code, note)

    def reply_status(self, st, note=""):
        self.reply(st["code"], st, note)

    def rst(self, note):
        # Abortive close: SO_LINGER {on, 0} makes close() send a TCP RST. An RST discards unsent
        # data, so first wait (bounded) until the peer has acknowledged everything written so far.
        self.log_req("RST", note)
        end = time.monotonic() + 2
        while time.monotonic() < end:
            outq = fcntl.ioctl(self.connection.fileno(), termios.TIOCOUTQ, struct.pack("i", 0))
            if struct.unpack("i", outq)[0] == 0:
                break
            time.sleep(0.001)
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        try:
            self.rfile.close()  # drop the makefile reference so close() really closes the fd
        finally:
            self.connection.close()
        raise ResetConnection()

    def chunk(self, data):
        if self.drip_ms:  # one byte per chunk, one chunk per TLS record
            for i in range(len(data)):
                if i and not STATE.pause(self.epoch, self.drip_ms / 1000.0):
                    raise ResetConnection()
                self.wfile.write(b"1\r\n%s\r\n" % data[i:i + 1])
            return
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))

    def end_chunks(self):
        self.wfile.write(b"0\r\n\r\n")

    # ---- routing ----
    def route(self, parts):
        """-> (resource, namespace or None, name or None) or None."""
        if parts[:3] == ["apis", "discovery.k8s.io", "v1"]:
            rest, served = parts[3:], ("endpointslices",)
        elif parts[:3] == ["apis", "events.k8s.io", "v1"]:
            rest, served = parts[3:], ("events",)
        elif parts[:3] == ["apis", "authorization.k8s.io", "v1"]:
            # Cluster-scoped, create only.
            return ("selfsubjectaccessreviews", None, None) if parts[3:] == ["selfsubjectaccessreviews"] else None
        elif parts[:2] == ["api", "v1"]:
            rest, served = parts[2:], ("pods", "services")
        else:
            return None
        if len(rest) >= 3 and rest[0] == "namespaces" and rest[2] in served and len(rest) <= 4:
            return rest[2], rest[1], rest[3] if len(rest) == 4 else None
        if len(rest) == 1 and rest[0] in served:
            return rest[0], None, None
        return None

    def dispatch(self):
        st = STATE
        self.auth, self.kind, self.stream_fault, self.drip_ms = "-", "other", None, 0
        url = urlsplit(self.path)
        try:
            self.query = dict(parse_qsl(url.query, keep_blank_values=True))
        except ValueError:
            self.query = {}
        r = self.route([p for p in url.path.split("/") if p])
        watch = False
        try:
            watch = parse_bool(self.query.get("watch", ""))
        except ValueError:
            pass
        if r and self.command in ("GET", "HEAD"):
            resource, ns, name = r
            if resource == "endpointslices":
                self.kind = "get-slice" if name else ("watch" if watch else "list")
            elif resource == "pods":
                self.kind = "get-pod" if name else ("watch-pod" if watch else "list-pod")
            elif resource == "services" and name:
                self.kind = "get-service"
        elif r and self.command == "POST":
            self.kind = {"events": "create-event", "selfsubjectaccessreviews": "ssar"}.get(r[0], "other")
        hdr = self.headers.get("Authorization", "")
        # A request body is read whatever the answer, so the connection stays in step.
        n = int(self.headers.get("Content-Length") or 0) if self.command == "POST" else 0
        self.body = self.rfile.read(n) if n > 0 else b""
        with st.lock:
            st.counts[self.kind] += 1
            st.requests.append({"method": self.command, "path": self.path, "kind": self.kind})
            tok = hdr[7:].strip() if hdr.startswith("Bearer ") else None
            if tok is None:
                self.auth = "missing" if not hdr else "invalid"
            elif tok == st.token:
                self.auth = "valid"
            elif tok in st.old_tokens:
                self.auth = "old-accepted"
            else:
                self.auth = "invalid"
            fault = self.take_fault(st, (self.kind, "any"))
            initialising = time.monotonic() < st.init_until
            st.cond.notify_all()
        if fault and self.apply_fault(fault):
            return
        if self.auth not in ("valid", "old-accepted"):
            # Authentication precedes authorization: 401 with a Status body.
            return self.reply_status(status_obj(401, "Unauthorized"))
        if initialising and self.kind in ("list", "watch", "list-pod", "watch-pod"):
            # [restart] A restarted apiserver answers LIST/WATCH with 429 + Retry-After until its
            # watch cache is initialised (ResilientWatchCacheInitialization, KEP-4568).
            return self.reply_status(status_obj(429, "storage is (re)initializing", reason="TooManyRequests",
                                                details={"retryAfterSeconds": 1}), "cache initialising")
        if r is None:
            return self.reply_status(status_obj(404, "the server could not find the requested resource",
                                                details={}))
        resource, ns, name = r
        creates = resource in ("events", "selfsubjectaccessreviews")
        if not (self.command in ("GET", "HEAD") and resource != "selfsubjectaccessreviews"
                or self.command == "POST" and creates and not name):
            return self.reply_status(status_obj(405, "the server does not allow this method on the requested resource",
                                                details={}))
        verb = "create" if self.command == "POST" else ("get" if name else ("watch" if watch else "list"))
        try:
            if self.forbidden(resource, verb, ns, name):
                return
            if verb == "create":
                return self.serve_create(resource, ns)
            if name:
                return self.serve_get(resource, ns, name)
            if watch:
                return self.serve_watch(resource, ns)
            return self.serve_list(resource, ns)
        except BadRequest as e:
            return self.reply_status(status_obj(400, str(e)))

    def take_fault(self, st, kinds):
        for kind in kinds:
            queue = st.faults.get(kind)
            if queue:
                f = queue[0]
                if f["remaining"] > 0:
                    f["remaining"] -= 1
                    if f["remaining"] == 0:
                        queue.pop(0)
                return f["fault"]
        return None

    def apply_fault(self, fault):
        """Returns True when the fault produced the whole response."""
        name, _, arg = fault.partition(":")
        if name == "slow_headers":
            time.sleep(int(arg or 1000) / 1000.0)
            return False
        if name == "hang":  # accept, never answer, keep the socket open
            self.log_req("HANG")
            with STATE.lock:
                while not STATE.dead(self.epoch):
                    STATE.cond.wait()
            raise ResetConnection()
        if name == "status":
            code = int(arg or 500)
            msgs = {500: "Internal error occurred: injected fault", 503: "the server is currently unable to handle the request",
                    504: "the server was unable to return a response in the time allotted, but may still be processing the request",
                    429: "too many requests, please try again later"}
            self.reply_status(status_obj(code, msgs.get(code, "injected fault %d" % code),
                                         details={"causes": [{"message": "injected fault"}]} if code == 500 else None),
                              "fault")
            return True
        if name == "reset":
            self.rst("fault=reset")
        if name == "garbage":
            self.reply(200, b'{"kind":"EndpointSliceList","apiVersion":"discovery.k8s.io/v1","items":[{"meta',
                       "fault=garbage")
            return True
        if name in ("reset_mid_stream", "garbage_event"):
            self.stream_fault = name  # handled by serve_watch (ignored for non-watch requests)
            return False
        if name == "drip_body":  # the answer is right, but its body comes one byte at a time
            self.drip_ms = int(arg or 1500)
            return False
        raise ValueError("unknown fault %r" % fault)

    def forbidden(self, resource, verb, ns, name):
        st = STATE
        with st.lock:
            allowed = verb in st.rbac.get(resource, set())
            user = "system:serviceaccount:%s:default" % st.namespace
        if allowed:
            return False
        group = GROUPS[resource][0]
        # forbiddenMessage() [authz] wrapped by NewForbidden() [status].
        where = ('in the namespace "%s"' % ns) if ns else "at the cluster scope"
        why = 'User "%s" cannot %s resource "%s" in API group "%s" %s' % (user, verb, resource, group, where)
        head = ('%s "%s"' % (qualified(resource), name)) if name else qualified(resource)
        self.reply_status(status_obj(403, "%s is forbidden: %s" % (head, why),
                                     details={"name": name, "group": group, "kind": resource}))
        return True

    # ---- create ----
    def read_body(self):
        try:
            obj = json.loads(self.body)
        except ValueError as e:
            raise BadRequest("the body of the request was in an unknown format: %s" % e)
        if not isinstance(obj, dict):
            raise BadRequest("the body of the request is not an object")
        return obj

    def serve_create(self, resource, ns):
        obj = self.read_body()
        _, api_version, kind = GROUPS[resource]
        if obj.get("apiVersion") != api_version or obj.get("kind") != kind:
            raise BadRequest("the API version in the data (%s) does not match the expected API version (%s)"
                             % (obj.get("apiVersion"), api_version))
        if resource == "selfsubjectaccessreviews":
            return self.serve_ssar(obj)
        return self.serve_event(obj, ns)

    def serve_ssar(self, obj):
        """[ssar] Answers from the `rbac` settings; the ServiceAccount is the only subject here."""
        spec = obj.get("spec") or {}
        attrs = spec.get("resourceAttributes")
        if (attrs is None) == (spec.get("nonResourceAttributes") is None):
            return self.reply_status(status_obj(
                422, 'SelfSubjectAccessReview.authorization.k8s.io "" is invalid: spec.resourceAttributes: Invalid '
                'value: "null": exactly one of nonResourceAttributes or resourceAttributes must be specified',
                reason="Invalid", details={"group": "authorization.k8s.io", "kind": "SelfSubjectAccessReview"}))
        allowed = False
        if attrs is not None:
            res, group, verb = attrs.get("resource", ""), attrs.get("group", ""), attrs.get("verb", "")
            with STATE.lock:
                allowed = res in GROUPS and GROUPS[res][0] == group and verb in STATE.rbac.get(res, set())
        status = {"allowed": allowed}
        if allowed:
            # roleBindingDescriber in k8s.io/kubernetes/pkg/registry/rbac/validation/rule.go: name/namespace.
            status["reason"] = ('RBAC: allowed by RoleBinding "lastcall-demo/%s" of Role "lastcall" to ServiceAccount '
                                '"default/%s"' % (STATE.namespace, STATE.namespace))
        out = {"kind": "SelfSubjectAccessReview", "apiVersion": "authorization.k8s.io/v1",
               "metadata": {"creationTimestamp": None}, "spec": spec, "status": status}
        self.reply(201, out, "allowed=%s" % allowed)

    def serve_event(self, ev, ns):
        """[events] Validates as ValidateEventCreate does for events.k8s.io/v1, then stores it."""
        meta = ev.get("metadata") or {}
        causes = []

        def bad(field, why, value=""):
            causes.append({"reason": "FieldValueInvalid" if why != "Required value" else "FieldValueRequired",
                           "message": "%s: %s" % (why, value) if value else why, "field": field})

        name = meta.get("name") or ""
        if not name and not meta.get("generateName"):
            bad("metadata.name", "Required value")
        elif name and not re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*", name) or len(name) > 253:
            bad("metadata.name", "Invalid value", name)
        if meta.get("namespace", ns) != ns:
            return self.reply_status(status_obj(400, "the namespace of the provided object does not match the "
                                                "namespace sent on the request"))
        t = ev.get("eventTime")
        if not t:
            bad("eventTime", "Required value")
        elif not re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}(Z|[+-]\d\d:\d\d)", t):
            # metav1.MicroTime parses with RFC3339Micro: the six digits are required [events].
            return self.reply_status(status_obj(400, 'Event in version "v1" cannot be handled as a Event: '
                                                'parsing time "%s" as "2006-01-02T15:04:05.000000Z07:00": '
                                                'cannot parse' % t, reason="BadRequest"))
        if ev.get("type") not in ("Normal", "Warning"):
            bad("type", "Invalid value", "has invalid value: %s" % ev.get("type", ""))
        ctrl = ev.get("reportingController") or ""
        if not ctrl:
            bad("reportingController", "Required value")
        elif not re.fullmatch(r"([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                              r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?", ctrl):
            bad("reportingController", "Invalid value", ctrl)
        for field, limit in (("reportingInstance", 128), ("action", 128), ("reason", 128)):
            v = ev.get(field) or ""
            if not v:
                bad(field, "Required value")
            elif len(v.encode()) > limit:
                bad(field, "Invalid value", "can have at most %d characters" % limit)
        if len((ev.get("note") or "").encode()) > 1024:
            bad("message", "Invalid value", "can have at most 1024 characters")
        regarding = ev.get("regarding") or {}
        if not regarding.get("namespace") and ns not in ("default", "kube-system"):
            bad("involvedObject.namespace", "Invalid value", "does not match event.namespace")
        for field in ("deprecatedFirstTimestamp", "deprecatedLastTimestamp", "deprecatedCount", "deprecatedSource", "series"):
            if ev.get(field):
                bad(field, "Invalid value", "needs to be unset")
        if causes:
            msg = "; ".join("%s: %s" % (c["field"], c["message"]) for c in causes)
            return self.reply_status(status_obj(
                422, 'Event.events.k8s.io "%s" is invalid: %s' % (name, msg), reason="Invalid",
                details={"name": name, "group": "events.k8s.io", "kind": "Event", "causes": causes}))
        st = STATE
        with st.lock:
            if not name:
                name = meta["generateName"] + random_suffix()
            if ("events", ns, name) in st.objects:
                return self.reply_status(status_obj(409, 'events.events.k8s.io "%s" already exists' % name,
                                                    reason="AlreadyExists",
                                                    details={"name": name, "group": "events.k8s.io", "kind": "events"}))
            ev = copy.deepcopy(ev)
            ev["metadata"] = dict(meta, name=name, namespace=ns, uid=new_uid(), resourceVersion="",
                                  creationTimestamp=rfc3339())
            st.put("events", ev, "ADDED")
            st.events.append(copy.deepcopy(ev))
        self.reply(201, ev, "event %s %s" % (ev.get("type"), ev.get("reason")))

    # ---- get / list ----
    def serve_get(self, resource, ns, name):
        with STATE.lock:
            obj = copy.deepcopy(STATE.objects.get((resource, ns, name)))
        if obj is None:
            return self.reply_status(not_found(resource, name))
        self.reply(200, obj)

    def selected(self, resource, ns):
        """Predicate for (resource, namespace, labelSelector, fieldSelector) of this request."""
        lsel = parse_label_selector(self.query.get("labelSelector", ""))
        fsel = parse_field_selector(self.query.get("fieldSelector", ""))

        def ok(res, obj):
            meta = obj["metadata"]
            return (res == resource and (ns is None or meta["namespace"] == ns)
                    and lsel(meta.get("labels") or {}) and fsel(meta))

        return ok

    def serve_list(self, resource, ns):
        st = STATE
        ok = self.selected(resource, ns)
        limit = int(self.query.get("limit") or 0)
        cont = self.query.get("continue", "")
        start = ""
        with st.lock:
            list_rv = st.rv
            if cont:
                try:
                    tok = json.loads(base64.b64decode(cont + "=" * (-len(cont) % 4)))
                    list_rv, start = int(tok["rv"]), tok["start"]
                except Exception:
                    raise BadRequest("continue key is not valid: the continue token is malformed")
                if 0 < list_rv < st.compacted_rv:
                    # [etcd3] handleCompactedErrorForPaging: 410 Expired + a fresh token (rv -1).
                    fresh = base64.b64encode(dumps({"v": "meta.k8s.io/v1", "rv": -1, "start": start}).encode()).decode()
                    return self.reply_status(status_obj(
                        410, "The provided continue parameter is too old to display a consistent list result. "
                        "You can start a new list without the continue parameter, or use the continue token in "
                        "this response to retrieve the remainder of the results. Continuing with the provided "
                        "token results in an inconsistent list - objects that were created, modified, or deleted "
                        "between the time the first chunk was returned and now may show up in the list.",
                        reason="Expired", cont=fresh))
                if list_rv <= 0:
                    list_rv = st.rv
            if self.query.get("resourceVersionMatch") == "Exact" and not cont:
                want = int(self.query.get("resourceVersion") or 0)
                if want < st.compacted_rv:  # [etcd3] interpretListError, non-paging case
                    return self.reply_status(status_obj(410, "The resourceVersion for the provided list is too old.",
                                                        reason="Expired"))
            keys = sorted(k for k, o in st.objects.items() if ok(k[0], o) and "%s/%s" % (k[1], k[2]) >= start)
            items = [copy.deepcopy(st.objects[k]) for k in keys]
        meta = {"resourceVersion": str(list_rv)}
        if limit and len(items) > limit:
            nxt = "%s/%s" % keys[limit][1:]
            meta["continue"] = base64.b64encode(dumps({"v": "meta.k8s.io/v1", "rv": list_rv, "start": nxt}).encode()).decode()
            meta["remainingItemCount"] = len(items) - limit
            items = items[:limit]
        for it in items:  # the real server omits kind/apiVersion on items of typed lists
            it.pop("kind", None)
            it.pop("apiVersion", None)
        _, api_version, kind = GROUPS[resource]
        self.reply(200, {"kind": kind + "List", "apiVersion": api_version, "metadata": meta, "items": items},
                   "items=%d" % len(items))

    # ---- watch ----
    def bookmark_obj(self, resource, rv, initial_end=False):
        _, api_version, kind = GROUPS[resource]
        meta = {"resourceVersion": str(rv)}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        obj = {"kind": kind, "apiVersion": api_version, "metadata": meta}
        if STATE.config["bookmark_style"] == "typed":
            # What the apiserver really serializes: an empty typed object with only the RV set.
            meta["creationTimestamp"] = None
            obj.update({"addressType": "", "endpoints": None, "ports": None} if resource == "endpointslices"
                       else {"spec": {"containers": None}, "status": {}})
        return {"type": "BOOKMARK", "object": obj}

    def serve_watch(self, resource, ns):
        st = STATE
        ok = self.selected(resource, ns)
        q = self.query
        rv_param = q.get("resourceVersion", "")
        try:
            start_rv = int(rv_param) if rv_param not in ("", "0") else None
            if start_rv is not None and start_rv < 0:
                raise ValueError
            allow_bm = parse_bool(q.get("allowWatchBookmarks", ""))
            send_initial = parse_bool(q.get("sendInitialEvents", "")) if "sendInitialEvents" in q else None
            # timeoutSeconds unset or 0: the server's default (kube-apiserver: min-request-timeout, 30 min).
            timeout = int(q.get("timeoutSeconds") or 0) or st.config["default_watch_timeout_s"]
        except ValueError:
            raise BadRequest('invalid watch parameters: resourceVersion=%r' % rv_param)
        stream_fault = self.stream_fault
        wid = object()
        with st.lock:
            # [cacher] "too old resource version: %d (%d)" when RV < oldest retained (compaction point,
            # or where the watch cache of a restarted server starts [restart]).
            oldest = max(st.compacted_rv, st.watch_floor_rv)
            expired = start_rv is not None and start_rv < oldest
            if expired:
                st_obj = status_obj(410, "too old resource version: %d (%d)" % (start_rv, oldest),
                                    reason=st.config["expired_reason"])
            initial = []
            if start_rv is None or send_initial:
                # Watch with RV unset or "0": synthetic ADDED for current state, then changes [concepts].
                initial = [{"type": "ADDED", "object": copy.deepcopy(o)}
                           for k, o in sorted(st.objects.items()) if ok(k[0], o)]
                cursor = len(st.history)
            else:
                cursor = next((i for i, h in enumerate(st.history) if h[0] > start_rv), len(st.history))
            if send_initial and allow_bm:
                initial.append(self.bookmark_obj(resource, st.rv, initial_end=True))
            if not expired:
                st.watchers[wid] = {"resource": resource, "ns": ns, "bookmarks": allow_bm, "bm_sent": st.bookmark_gen}
                st.cond.notify_all()
            my_bm, my_close = st.bookmark_gen, st.close_gen
        if expired and st.config["watch_410"] == "http":
            return self.reply_status(st_obj, "watch expired (http mode)")
        # Headers go out at once, before any event: 200, chunked, application/json [concepts].
        self.send_response(200)
        self.common_headers()
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.log_req(200, "watch start rv=%s bookmarks=%s timeout=%ss" % (rv_param or "-", allow_bm, timeout))
        if expired:
            # The real server: HTTP 200 then one ERROR event carrying the 410 Status, then EOF [cacher].
            self.chunk((dumps({"type": "ERROR", "object": st_obj}) + "\n").encode())
            self.end_chunks()
            self.log_req(200, "watch end: ERROR 410 %s" % st_obj["message"])
            return
        try:
            self.watch_loop(st, wid, resource, ok, initial, cursor, allow_bm, timeout, my_bm, my_close, stream_fault)
        finally:
            with st.lock:
                st.watchers.pop(wid, None)
                st.cond.notify_all()

    def watch_loop(self, st, wid, resource, ok, pending, cursor, allow_bm, timeout, my_bm, my_close, stream_fault):
        deadline = time.monotonic() + timeout
        interval = st.config["bookmark_interval_ms"] / 1000.0
        next_bm = time.monotonic() + interval if interval > 0 else None
        if stream_fault == "garbage_event":
            self.chunk(b'{"type":"MODIFIED","object":{"kind":"EndpointSlice",,,garbage\n')
            self.log_req(200, "fault=garbage_event sent")
        while True:
            end_reason = None
            with st.lock:
                while True:
                    for rv, res, _ns, etype, obj, prev in st.history[cursor:]:
                        # Selector transitions become ADDED/DELETED, as the watch cache does.
                        now_in, was_in = ok(res, obj), prev is not None and ok(res, prev)
                        if etype == "DELETED":
                            now_in, was_in = False, ok(res, obj)
                        if now_in and was_in:
                            pending.append({"type": etype, "object": obj})
                        elif now_in:
                            pending.append({"type": "ADDED", "object": obj})
                        elif was_in:
                            pending.append({"type": "DELETED", "object": obj})
                    cursor = len(st.history)
                    now = time.monotonic()
                    if allow_bm and (st.bookmark_gen != my_bm or (next_bm and now >= next_bm)):
                        my_bm = st.bookmark_gen
                        next_bm = now + interval if interval > 0 else None
                        pending.append(self.bookmark_obj(resource, st.rv))
                    if st.dead(self.epoch) and not st.stopping.is_set():
                        end_reason = "killed"  # a restart: the socket is cut, nothing more is written
                        break
                    if st.close_gen != my_close:
                        if st.close_error:
                            pending.append({"type": "ERROR", "object": st.close_error})
                        end_reason = "closed by control command"
                    elif now >= deadline:
                        end_reason = "timeoutSeconds reached"
                    elif st.stopping.is_set():
                        end_reason = "server stopping"
                    if pending or end_reason or stream_fault == "reset_mid_stream":
                        break
                    waits = [deadline - now] + ([next_bm - now] if next_bm and allow_bm else [])
                    st.cond.wait(max(0.0, min(waits)))
            if end_reason == "killed":
                self.log_req(200, "watch end: server killed")
                return
            if stream_fault == "reset_mid_stream":
                return self.reset_mid_stream(st, resource, ok, pending)
            for ev in pending:
                self.chunk((dumps(ev) + "\n").encode())
                if ev["type"] != "BOOKMARK":
                    self.log_req(200, "watch event %s %s rv=%s" % (
                        ev["type"], ev["object"]["metadata"].get("name", ""),
                        ev["object"]["metadata"].get("resourceVersion", "")))
            pending = []
            with st.lock:  # lets the bookmark command know its BOOKMARK is on the wire
                st.watchers[wid]["bm_sent"] = my_bm
                st.cond.notify_all()
            if end_reason:
                self.end_chunks()  # clean end of stream: terminating zero-length chunk
                self.log_req(200, "watch end: " + end_reason)
                return

    def reset_mid_stream(self, st, resource, ok, pending):
        with st.lock:
            if not pending:
                cur = [o for k, o in sorted(st.objects.items()) if ok(k[0], o)]
                pending = [{"type": "MODIFIED", "object": copy.deepcopy(cur[0])}] if cur else \
                    [self.bookmark_obj(resource, st.rv)]
        first = (dumps(pending[0]) + "\n").encode()
        self.chunk(first)
        self.chunk(first[: len(first) // 2])
        self.rst("fault=reset_mid_stream")


class DripTLS:
    """Server-side TLS over MemoryBIOs, standing in for the handler's rfile and wfile [drip]: the
    handshake and the first write (the response head) go out at full speed; every later TLS byte
    (the body's records, each watch event) is sent alone, one every `ms`, so no record completes
    within any per-read timeout the client may have."""

    def __init__(self, raw, ctx, ms, epoch):
        self.raw, self.ms, self.epoch, self.writes, self.buf = raw, ms, epoch, 0, b""
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.inc, self.out, server_side=True)
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self.send(fast=True)
                if not self.pump():
                    raise ResetConnection()
        self.send(fast=True)  # the last handshake flight and the session tickets

    def pump(self):
        d = self.raw.recv(65536)
        if not d:
            self.inc.write_eof()
            return False
        self.inc.write(d)
        return True

    def send(self, fast):
        data = self.out.read()
        if fast:
            self.raw.sendall(data)
            return
        for i in range(len(data)):
            if i and not STATE.pause(self.epoch, self.ms / 1000.0):
                raise ResetConnection()
            self.raw.sendall(data[i:i + 1])

    def fill(self):
        while True:
            try:
                self.buf += self.tls.read(65536)
                return True
            except ssl.SSLWantReadError:
                if not self.pump():
                    return False
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return False

    def readline(self, limit=-1):
        while b"\n" not in self.buf and (limit < 0 or len(self.buf) < limit) and self.fill():
            pass
        end = self.buf.find(b"\n") + 1 or len(self.buf)
        if limit >= 0:
            end = min(end, limit)
        line, self.buf = self.buf[:end], self.buf[end:]
        return line

    def read(self, n=-1):
        while (n < 0 or len(self.buf) < n) and self.fill():
            pass
        n = len(self.buf) if n < 0 else n
        data, self.buf = self.buf[:n], self.buf[n:]
        return data

    def write(self, data):
        self.tls.write(data)
        self.writes += 1
        self.send(fast=self.writes == 1)
        return len(data)

    closed = False

    def flush(self):
        pass

    def close(self):
        pass


class Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def handle_error(self, request, client_address):
        exc = sys.exc_info()[1]
        sys.stderr.write("apiserver: connection from %s ended: %r\n" % (client_address, exc))


class Server6(Server):
    address_family = socket.AF_INET6


# ---------------------------------------------------------------------------------------------
# Control side: JSON commands on stdin, one JSON reply per line on stdout
# ---------------------------------------------------------------------------------------------
def new_uid():
    return str(uuid.uuid4())


def cmd_add_pod(st, c):
    ns = c.get("namespace", st.namespace)
    ips = c.get("ips") or [c.get("ip", "10.0.0.%d" % random.randint(2, 250))]
    ready = c.get("ready", True)
    now = rfc3339()
    cond = lambda t: {"type": t, "status": "True" if ready else "False", "lastProbeTime": None,
                      "lastTransitionTime": now}
    pod = {"kind": "Pod", "apiVersion": "v1",
           "metadata": {"name": c["name"], "namespace": ns, "uid": c.get("uid") or new_uid(),
                        "resourceVersion": "", "generation": 1, "creationTimestamp": now,
                        "labels": c.get("labels", {"app": c["name"].rsplit("-", 1)[0]})},
           "spec": {"containers": [{"name": "app", "image": "example.invalid/app:latest", "resources": {},
                                    "terminationMessagePath": "/dev/termination-log",
                                    "terminationMessagePolicy": "File", "imagePullPolicy": "IfNotPresent"}],
                    "restartPolicy": "Always", "terminationGracePeriodSeconds": c.get("grace", 30),
                    "dnsPolicy": "ClusterFirst", "serviceAccountName": "default", "serviceAccount": "default",
                    "nodeName": c.get("node", "node-1"), "securityContext": {},
                    "schedulerName": "default-scheduler", "enableServiceLinks": True},
           "status": {"phase": "Running",
                      "conditions": [{"type": "Initialized", "status": "True", "lastProbeTime": None,
                                      "lastTransitionTime": now}, cond("Ready"), cond("ContainersReady"),
                                     {"type": "PodScheduled", "status": "True", "lastProbeTime": None,
                                      "lastTransitionTime": now}],
                      "hostIP": "172.18.0.2", "hostIPs": [{"ip": "172.18.0.2"}],
                      "podIP": ips[0], "podIPs": [{"ip": ip} for ip in ips], "startTime": now,
                      "qosClass": "BestEffort"}}
    with st.lock:
        if ("pods", ns, c["name"]) in st.objects:
            raise ValueError("pod %r exists" % c["name"])
        st.put("pods", pod, "ADDED")
        return {"uid": pod["metadata"]["uid"], "resourceVersion": pod["metadata"]["resourceVersion"]}


def cmd_add_service(st, c):
    ns = c.get("namespace", st.namespace)
    family = c.get("ip_family", "IPv4")
    families = ["IPv4", "IPv6"] if family == "dual" else [family]
    ports = c.get("ports", [{"name": "http", "protocol": "TCP", "port": 8080}])
    svc = {"ns": ns, "name": c["name"], "uid": c.get("uid") or new_uid(),
           "publishNotReadyAddresses": bool(c.get("publishNotReadyAddresses", False)), "slices": []}
    kind = c.get("type", "ClusterIP")
    if kind not in ("ClusterIP", "NodePort", "LoadBalancer"):
        raise ValueError("unsupported Service type %r" % kind)
    with st.lock:
        if (ns, c["name"]) in st.services:
            raise ValueError("service %r exists" % c["name"])
        st.services[(ns, c["name"])] = svc
        st.put("services", service_object(svc, kind, families, ports, c.get("selector", {"app": c["name"]}),
                                          c.get("labels", {})), "ADDED")
        for fam in families:
            for _ in range(int(c.get("slices", 1))):
                sl = new_slice(svc, fam, ports, c.get("labels", {}))
                svc["slices"].append(sl["metadata"]["name"])
                st.put("endpointslices", sl, "ADDED")
        return {"uid": svc["uid"], "slices": list(svc["slices"])}


def service_object(svc, kind, families, ports, selector, labels):
    """The core/v1 Service as the API server returns it after defaulting [svc]."""
    n = int(svc["uid"].replace("-", "")[:4], 16) % 250 + 2
    ips = [{"IPv4": "10.96.0.%d" % n, "IPv6": "fd00:10:96::%x" % n}[f] for f in families]
    spec_ports = []
    for i, p in enumerate(ports):
        sp = {"name": p.get("name", ""), "protocol": p.get("protocol", "TCP"), "port": p["port"],
              "targetPort": p.get("targetPort", p["port"])}
        if kind != "ClusterIP":
            sp["nodePort"] = 30000 + (n * 7 + i) % 2768
        spec_ports.append(sp)
    spec = {"ports": spec_ports, "selector": selector, "clusterIP": ips[0], "clusterIPs": ips, "type": kind,
            "sessionAffinity": "None", "ipFamilies": families,
            "ipFamilyPolicy": "RequireDualStack" if len(families) > 1 else "SingleStack",
            "internalTrafficPolicy": "Cluster"}
    if kind != "ClusterIP":
        spec["externalTrafficPolicy"] = "Cluster"
    if kind == "LoadBalancer":
        spec["allocateLoadBalancerNodePorts"] = True
    if svc["publishNotReadyAddresses"]:
        spec["publishNotReadyAddresses"] = True  # omitempty: absent when false
    status = {"loadBalancer": {"ingress": [{"ip": "203.0.113.%d" % n, "ipMode": "VIP"}]} if kind == "LoadBalancer" else {}}
    meta = {"name": svc["name"], "namespace": svc["ns"], "uid": svc["uid"], "resourceVersion": "",
            "creationTimestamp": rfc3339()}
    if labels:
        meta["labels"] = dict(labels)
    return {"kind": "Service", "apiVersion": "v1", "metadata": meta, "spec": spec, "status": status}


def random_suffix():
    return "".join(random.choice(NAME_ALPHABET) for _ in range(5))


def new_slice(svc, fam, ports, extra_labels):
    """An empty EndpointSlice of `svc` as the EndpointSlice controller creates it [eps]."""
    now = rfc3339()
    labels = dict(extra_labels)
    labels.update({"endpointslice.kubernetes.io/managed-by": MANAGED_BY, "kubernetes.io/service-name": svc["name"]})
    return {"kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1",
            "metadata": {"name": "%s-%s" % (svc["name"], random_suffix()), "generateName": svc["name"] + "-",
                         "namespace": svc["ns"], "uid": new_uid(), "resourceVersion": "", "generation": 1,
                         "creationTimestamp": now, "labels": labels,
                         "annotations": {"endpoints.kubernetes.io/last-change-trigger-time": rfc3339nano()},
                         "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": svc["name"],
                                              "uid": svc["uid"], "controller": True, "blockOwnerDeletion": True}],
                         "managedFields": [{"manager": "kube-controller-manager", "operation": "Update",
                                            "apiVersion": "discovery.k8s.io/v1", "time": now, "fieldsType": "FieldsV1",
                                            "fieldsV1": {"f:addressType": {}, "f:endpoints": {}, "f:ports": {}}}]},
            "addressType": fam,
            "endpoints": None,  # Go nil slice without omitempty: an empty slice is `null`
            "ports": copy.deepcopy(ports)}


def cmd_add_bulk(st, c):
    """A big namespace: `services` Services with `endpoints` ready endpoints each, packed into
    slices of at most `max_per_slice` (the controller's --max-endpoints-per-slice, default 100).
    The endpoints name pods that have no Pod object here (only the slices matter); their IPs are
    10.64.0.0/10 addresses, apart from the ones tests give their own pods."""
    n_svc, per_svc = int(c.get("services", 1)), int(c.get("endpoints", 100))
    per_slice, prefix = int(c.get("max_per_slice", 100)), c.get("prefix", "bulk")
    ns = c.get("namespace", st.namespace)
    ports = [{"name": "http", "protocol": "TCP", "port": 8080}]
    made = 0
    with st.lock:
        for i in range(n_svc):
            name = "%s-%d" % (prefix, i)
            if (ns, name) in st.services:
                raise ValueError("service %r exists" % name)
            svc = {"ns": ns, "name": name, "uid": new_uid(), "publishNotReadyAddresses": False, "slices": []}
            st.services[(ns, name)] = svc
            for first in range(0, per_svc, per_slice):
                sl = new_slice(svc, "IPv4", ports, {})
                eps = []
                for _ in range(min(per_slice, per_svc - first)):
                    st.bulk_ips += 1
                    ips = st.bulk_ips
                    pod = "%s-%s-%s" % (name, random_suffix(), random_suffix())
                    eps.append({"addresses": ["10.%d.%d.%d" % (64 + (ips >> 16), (ips >> 8) & 255, ips & 255)],
                                "conditions": {"ready": True, "serving": True, "terminating": False},
                                "targetRef": {"kind": "Pod", "namespace": ns, "name": pod, "uid": new_uid()},
                                "nodeName": "node-%d" % (ips % 50), "zone": "zone-%s" % "abc"[ips % 3]})
                sl["endpoints"] = eps
                svc["slices"].append(sl["metadata"]["name"])
                st.put("endpointslices", sl, "ADDED")
                made += 1
    return {"services": n_svc, "slices": made, "endpoints": n_svc * per_svc, "resourceVersion": str(st.rv)}


def find_endpoints(st, c):
    """-> [(svc, slice, endpoint index)] for the pod named c["pod"] in c["service"] (optional c["slice"])."""
    svc = st.service(c["service"], c.get("namespace"))
    out = []
    for sl in st.slices_of(svc, c.get("slice")):
        for i, ep in enumerate(sl["endpoints"] or []):
            if ep.get("targetRef", {}).get("name") == c["pod"]:
                out.append((svc, sl, i))
    if not out:
        raise KeyError("no endpoint for pod %r in service %r" % (c["pod"], c["service"]))
    return out


def apply_condition_overrides(conds, c):
    for k in ("ready", "serving", "terminating"):
        if k in c:
            if c[k] is None:
                conds.pop(k, None)  # nil: omitted from JSON (omitempty *bool)
            else:
                conds[k] = bool(c[k])
    omit = c.get("omit_conditions", False)
    if omit is True:
        conds.clear()
    elif isinstance(omit, list):
        for k in omit:
            conds.pop(k, None)
    # Keep the Go struct order: ready, serving, terminating.
    return {k: conds[k] for k in ("ready", "serving", "terminating") if k in conds}


def cmd_add_endpoint(st, c):
    with st.lock:
        svc = st.service(c["service"], c.get("namespace"))
        sl = st.slices_of(svc, c.get("slice", 0))[0]
        pod = st.pod(c["pod"], svc["ns"])
        fam = sl["addressType"]
        ips = [p["ip"] for p in pod["status"]["podIPs"]]
        addr = c.get("address") or next((ip for ip in ips if (":" in ip) == (fam == "IPv6")), ips[0])
        ep = {"addresses": [addr],
              "conditions": apply_condition_overrides(st.pod_conditions(pod, svc), c)}
        if c.get("hostname"):
            ep["hostname"] = c["hostname"]
        ep["targetRef"] = {"kind": "Pod", "namespace": svc["ns"], "name": pod["metadata"]["name"],
                           "uid": pod["metadata"]["uid"]}
        ep["nodeName"] = c.get("node", pod["spec"]["nodeName"])
        ep["zone"] = c.get("zone", "zone-a")
        sl["endpoints"] = (sl["endpoints"] or []) + [ep]
        st.touch_slice(sl)
        return {"slice": sl["metadata"]["name"], "resourceVersion": sl["metadata"]["resourceVersion"]}


def cmd_remove_endpoint(st, c):
    with st.lock:
        done = []
        for _svc, sl, _ in find_endpoints(st, c):
            sl["endpoints"] = [e for e in sl["endpoints"] if e.get("targetRef", {}).get("name") != c["pod"]] or None
            done.append(st.touch_slice(sl))
        return {"slices": done}


def cmd_set_conditions(st, c):
    with st.lock:
        touched = {}
        for _svc, sl, i in find_endpoints(st, c):
            ep = sl["endpoints"][i]
            ep["conditions"] = apply_condition_overrides(dict(ep["conditions"]), c)
            touched[sl["metadata"]["name"]] = sl
        return {"slices": [st.touch_slice(sl) for sl in touched.values()]}


def cmd_delete_pod(st, c):
    with st.lock:
        pod = st.pod(c["name"], c.get("namespace"))
        grace = c.get("grace_seconds")
        grace = pod["spec"]["terminationGracePeriodSeconds"] if grace is None else int(grace)
        meta = pod["metadata"]
        # Graceful delete: deletionTimestamp = now + grace, deletionGracePeriodSeconds = grace
        # (it may only shrink on a second delete); generation is bumped (rest.BeforeDelete).
        if "deletionTimestamp" not in meta or grace < meta["deletionGracePeriodSeconds"]:
            # Insert after creationTimestamp to keep ObjectMeta's field order.
            items = list(meta.items())
            at = 1 + next(i for i, (k, _) in enumerate(items) if k == "creationTimestamp")
            fields = dict(items[:at])
            fields.update(deletionTimestamp=rfc3339(time.time() + grace), deletionGracePeriodSeconds=grace)
            fields.update((k, v) for k, v in items[at:] if k not in fields)
            meta.clear()
            meta.update(fields)
            meta["generation"] += 1
            st.put("pods", pod, "MODIFIED")
        res = {"deletionTimestamp": meta["deletionTimestamp"], "resourceVersion": meta["resourceVersion"]}
        flip_ms = int(c.get("flip_after_ms", 0))
        if c.get("flip", True) and flip_ms <= 0:
            res["slices"] = st.reflect_pod(pod)
    if c.get("flip", True) and flip_ms > 0:
        def flip():
            with st.lock:
                try:
                    st.reflect_pod(st.pod(c["name"], c.get("namespace")))
                except KeyError:
                    pass
        t = threading.Timer(flip_ms / 1000.0, flip)
        t.daemon = True
        t.start()
    return res


def cmd_set_pod_ready(st, c):
    with st.lock:
        pod = st.pod(c["name"], c.get("namespace"))
        for cond in pod["status"]["conditions"]:
            if cond["type"] in ("Ready", "ContainersReady"):
                cond["status"] = "True" if c["ready"] else "False"
                cond["lastTransitionTime"] = rfc3339()
        st.put("pods", pod, "MODIFIED")
        return {"slices": st.reflect_pod(pod) if c.get("propagate", True) else []}


def cmd_remove_pod(st, c):
    with st.lock:
        ns = c.get("namespace", st.namespace)
        st.remove("pods", ns, c["name"])
        done = []
        if c.get("propagate", True):  # controller drops endpoints of pods that no longer exist
            for svc in st.services.values():
                for sl in st.slices_of(svc):
                    eps = sl["endpoints"] or []
                    keep = [e for e in eps if e.get("targetRef", {}).get("name") != c["name"]]
                    if len(keep) != len(eps):
                        sl["endpoints"] = keep or None
                        done.append(st.touch_slice(sl))
        return {"slices": done}


def cmd_delete_slice(st, c):
    with st.lock:
        svc = st.service(c["service"], c.get("namespace"))
        sl = st.slices_of(svc, c.get("slice", 0))[0]
        svc["slices"].remove(sl["metadata"]["name"])
        st.remove("endpointslices", svc["ns"], sl["metadata"]["name"])
        return {"slice": sl["metadata"]["name"], "resourceVersion": sl["metadata"]["resourceVersion"]}


def cmd_rotate_token(st, c):
    with st.lock:
        if c.get("accept_old", False):
            st.old_tokens.add(st.token)
        else:
            st.old_tokens.clear()
        st.token = c.get("token") or st.new_token()
        st.write_file("token", st.token)
        return {"token": st.token}


def cmd_revoke_old_tokens(st, c):
    with st.lock:
        st.old_tokens.clear()
    return {}


def cmd_rbac(st, c):
    with st.lock:
        for res in GROUPS:
            if res in c:
                v = c[res]
                st.rbac[res] = set(v) if isinstance(v, list) else (set(VERBS[res]) if v else set())
        return {"rbac": {k: sorted(v) for k, v in st.rbac.items()}}


def cmd_fault(st, c):
    kind = KIND_ALIASES.get(c["kind"], c["kind"])
    if kind not in KINDS and kind not in ("any", "connect"):
        raise ValueError("unknown kind %r (one of %s, any, connect)" % (c["kind"], ", ".join(KINDS)))
    fault = c["fault"]
    name = fault.partition(":")[0]
    if (kind == "connect") != (name in ("drip_tls", "drip_tls_body")):
        raise ValueError("fault %r does not go with kind %r (drip_tls and drip_tls_body are the connect faults)"
                         % (fault, kind))
    if name not in ("hang", "status", "reset", "garbage", "reset_mid_stream", "garbage_event", "slow_headers",
                    "drip_tls", "drip_tls_body", "drip_body"):
        raise ValueError("unknown fault %r" % fault)
    count = int(c.get("count", 1))
    with st.lock:
        st.faults.setdefault(kind, []).append({"fault": fault, "remaining": -1 if count <= 0 else count})
    return {}


def cmd_clear_faults(st, c):
    with st.lock:
        if c.get("kind"):
            st.faults.pop(KIND_ALIASES.get(c["kind"], c["kind"]), None)
        else:
            st.faults.clear()
    return {}


def cmd_compact(st, c):
    # Like an etcd compaction plus a fresh watch-cache window: history before the current RV is gone.
    with st.lock:
        st.compacted_rv = int(c.get("rv", st.rv))
        return {"compacted": str(st.compacted_rv)}


def cmd_bookmark(st, c):
    """BOOKMARK (current RV) to every watch with allowWatchBookmarks; replies once all are written."""
    with st.lock:
        st.bookmark_gen += 1
        gen, rv = st.bookmark_gen, st.rv
        st.cond.notify_all()
        n = sum(1 for w in st.watchers.values() if w["bookmarks"])
    sent = wait_until(st, lambda: all(w["bm_sent"] >= gen for w in st.watchers.values() if w["bookmarks"]),
                      int(c.get("timeout_ms", 5000)))
    return {"watchers": n, "resourceVersion": str(rv), "sent": sent}


def cmd_close_watches(st, c):
    """End every open watch cleanly; with "error": "expired" (or an HTTP code) send an ERROR event first."""
    with st.lock:
        st.close_gen += 1
        err = c.get("error")
        if not err:
            st.close_error = None
        elif err == "expired":
            st.close_error = status_obj(410, "too old resource version: %d (%d)" % (st.rv - 1, st.rv),
                                        reason=st.config["expired_reason"])
        else:
            st.close_error = status_obj(int(err), "injected watch error")
        st.cond.notify_all()
        ids = set(st.watchers)
    # Reply once each of those streams has ended (bounded), so the caller can rely on it.
    closed = wait_until(st, lambda: not ids & set(st.watchers), int(c.get("timeout_ms", 5000)))
    return {"watchers": len(ids), "closed": closed}


def cmd_restart(st, c):
    """[restart] The apiserver process dies and comes back `gap_ms` later with the same state (etcd
    keeps it): the listening socket closes (connects are refused), open connections are cut, and the
    new incarnation's watch cache starts at the current RV, so watches from an older RV get 410. For
    `init_429_ms` after coming back, LIST and WATCH answer 429 "storage is (re)initializing"
    (Retry-After: 1). Replies once the server listens again."""
    gap, init = int(c.get("gap_ms", 0)), int(c.get("init_429_ms", 0))
    with st.lock:
        st.epoch += 1
        st.cond.notify_all()
        old, conns = st.server, list(st.conns)
    old.shutdown()  # stop accepting (the accept loop polls every 50 ms) ...
    old.server_close()  # ... then close the port: connects are refused from now on
    for h in conns:
        h.kill()
    down = time.monotonic()
    sys.stderr.write("apiserver: killed (epoch %d): %d connections cut, down for %dms\n" % (st.epoch, len(conns), gap))
    time.sleep(gap / 1000.0)  # the gap: nothing listens
    with st.lock:
        # The new process writes before it serves (its identity Lease in kube-system, the
        # `kubernetes` Service endpoints): etcd's revision moves on, past every RV a client holds.
        st.rv += 1
        st.watch_floor_rv = st.rv
        st.init_until = time.monotonic() + init / 1000.0
    start_server(st, old.server_address[:2], type(old))
    sys.stderr.write("apiserver: listening again (epoch %d), watch cache from rv %d\n" % (st.epoch, st.watch_floor_rv))
    return {"resourceVersion": str(st.rv), "down_ms": int((time.monotonic() - down) * 1000), "epoch": st.epoch}


def cmd_events(st, c):
    with st.lock:
        return {"events": copy.deepcopy(st.events)}


def cmd_stats(st, c):
    with st.lock:
        return {"counts": dict(st.counts), "requests": list(st.requests), "active_watches": len(st.watchers),
                "resourceVersion": str(st.rv)}


def cmd_reset_stats(st, c):
    with st.lock:
        st.counts = dict.fromkeys(KINDS, 0)
        st.requests = []
    return {}


def wait_until(st, pred, timeout_ms):
    end = time.monotonic() + timeout_ms / 1000.0
    with st.lock:
        while not pred():
            left = end - time.monotonic()
            if left <= 0:
                return False
            st.cond.wait(left)
        return True


def cmd_wait_watches(st, c):
    n, res = int(c.get("count", 1)), c.get("resource")
    ok = wait_until(st, lambda: sum(1 for w in st.watchers.values()
                                    if res is None or w["resource"] == res) >= n, int(c.get("timeout_ms", 10000)))
    if not ok:
        raise TimeoutError("fewer than %d active watches after %sms" % (n, c.get("timeout_ms", 10000)))
    return {"active_watches": len(st.watchers)}


def cmd_wait_requests(st, c):
    kind, n = c.get("kind", "list"), int(c.get("count", 1))
    if not wait_until(st, lambda: st.counts.get(kind, 0) >= n, int(c.get("timeout_ms", 10000))):
        raise TimeoutError("fewer than %d %s requests after %sms" % (n, kind, c.get("timeout_ms", 10000)))
    return {"counts": dict(st.counts)}


def cmd_config(st, c):
    with st.lock:
        for k, v in c.items():
            if k == "cmd":
                continue
            if k not in st.config:
                raise ValueError("unknown config key %r" % k)
            st.config[k] = v
        st.cond.notify_all()
        return {"config": dict(st.config)}


def cmd_get(st, c):
    with st.lock:
        key = (c.get("resource", "endpointslices"), c.get("namespace", st.namespace), c["name"])
        if key not in st.objects:
            raise KeyError("no %s %r" % key[::2])
        return {"object": copy.deepcopy(st.objects[key])}


def cmd_dump(st, c):
    with st.lock:
        return {"resourceVersion": str(st.rv), "compacted": str(st.compacted_rv), "token": st.token,
                "services": {"%s/%s" % k: v["slices"] for k, v in st.services.items()},
                "objects": [copy.deepcopy(o) for _, o in sorted(st.objects.items())]}


COMMANDS = {name[4:]: fn for name, fn in globals().items() if name.startswith("cmd_")}


def control_loop(st):
    for line in sys.stdin:
        line = line.strip()
        if not line:
            continue
        try:
            c = json.loads(line)
            fn = COMMANDS.get(c.get("cmd"))
            if fn is None:
                raise ValueError("unknown cmd %r (known: %s)" % (c.get("cmd"), ", ".join(sorted(COMMANDS))))
            out = {"ok": True}
            out.update(fn(st, c) or {})
        except Exception as e:  # every command gets exactly one reply
            out = {"ok": False, "error": "%s: %s" % (type(e).__name__, e)}
        sys.stdout.write(dumps(out) + "\n")
        sys.stdout.flush()


# ---------------------------------------------------------------------------------------------
# Certificates and main
# ---------------------------------------------------------------------------------------------
def make_certs(d):
    def run(*args):
        subprocess.run(["openssl", *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    p = lambda n: os.path.join(d, n)
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *ec, "-keyout", p("ca.key"), "-out", p("ca.crt"), "-days", "2",
        "-subj", "/CN=lastcall-test-ca", "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    run("req", "-new", *ec, "-keyout", p("server.key"), "-out", p("server.csr"), "-subj", "/CN=kube-apiserver")
    with open(p("server.ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost\nbasicConstraints=critical,CA:FALSE\n"
                "keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n"
                "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n")
    run("x509", "-req", "-in", p("server.csr"), "-CA", p("ca.crt"), "-CAkey", p("ca.key"),
        "-set_serial", str(random.getrandbits(63)), "-days", "2", "-extfile", p("server.ext"),
        "-out", p("server.crt"))
    os.remove(p("server.csr"))
    os.remove(p("server.ext"))


def start_server(st, addr, cls):
    srv = cls(addr, Handler)
    srv.ssl_ctx = st.ssl_ctx
    st.server = srv
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return srv


def main():
    global STATE
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", required=True)
    ap.add_argument("--namespace", default="default")
    ap.add_argument("--ipv6", action="store_true", help="listen on ::1 instead of 127.0.0.1")
    args = ap.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    make_certs(args.dir)
    STATE = State(args.dir, args.namespace)
    STATE.write_file("token", STATE.token)
    STATE.write_file("namespace", args.namespace)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(os.path.join(args.dir, "server.crt"), os.path.join(args.dir, "server.key"))
    ctx.set_alpn_protocols(["http/1.1"])
    STATE.ssl_ctx = ctx
    srv = start_server(STATE, ("::1" if args.ipv6 else "127.0.0.1", 0), Server6 if args.ipv6 else Server)
    sys.stdout.write("READY port=%d\n" % srv.server_address[1])
    sys.stdout.flush()
    sys.stderr.write("apiserver: listening on %s port %d, dir %s\n" % (srv.server_address[0], srv.server_address[1], args.dir))
    try:
        control_loop(STATE)
    except KeyboardInterrupt:
        pass
    STATE.stopping.set()
    with STATE.lock:
        STATE.cond.notify_all()
    sys.stderr.write("apiserver: stdin closed, exiting\n")
    sys.stderr.flush()
    sys.stdout.flush()
    os._exit(0)  # daemon threads (hung connections, watches) die with the process


if __name__ == "__main__":
    main()
