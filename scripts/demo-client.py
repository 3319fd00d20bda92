"""Demo client: waits for the app, sends a request every 100 ms on a
keep-alive connection (as a load balancer would), sends SIGTERM to the
init 1 s in, keeps sending for 1.5 s more (the load balancer has not yet
heard that the endpoint is gone), then stops and reports."""
import http.client, os, signal, sys, time

port, init_pid = int(sys.argv[1]), int(sys.argv[2])
deadline = time.monotonic() + 10
while True:
    try:
        http.client.HTTPConnection("127.0.0.1", port, timeout=1).request("GET", "/")
        break
    except OSError:
        if time.monotonic() > deadline:
            sys.exit("app did not come up")
        time.sleep(0.05)

t0 = time.monotonic()
ok = failed = 0
conn = None
term_sent = None
while time.monotonic() - t0 < 2.5:
    if term_sent is None and time.monotonic() - t0 >= 1.0:
        os.kill(init_pid, signal.SIGTERM)
        term_sent = time.monotonic()
        print(f"[client] t=+{term_sent - t0:.1f}s  SIGTERM sent to the init; requests keep coming for 1.5 s")
    try:
        if conn is None:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
        conn.request("GET", "/")
        resp = conn.getresponse()
        resp.read()
        if resp.status == 200:
            ok += 1
        else:
            failed += 1
        if resp.getheader("Connection", "").lower() == "close":
            conn.close()
            conn = None
    except OSError:
        failed += 1
        conn = None
    time.sleep(0.1)
print(f"[client] stopped sending at t=+{time.monotonic() - t0:.1f}s: {ok} requests ok, {failed} failed")
