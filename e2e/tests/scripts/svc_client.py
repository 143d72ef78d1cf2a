"""The client side of the service e2e tests (e2e/tests/services.rs).

Run inside a pod's network namespace (`ip netns exec`) or the lab's
external host, with one JSON argument saying what to do; prints one JSON
object with what happened. Every loop is bounded by its count or its
duration, and every socket has a timeout.

  {"do": "http", "url": U, "count": N}
      N GETs, a new connection each; bodies counted, errors listed.
  {"do": "connect", "host": H, "port": P}
      One TCP connect: "ok", "refused" or "timeout", and how long it took.
  {"do": "until_http", "url": U, "limit": S}
      GETs every 50 ms until one succeeds or S seconds pass.
  {"do": "loop", "url": U, "seconds": S, "every": E}
      A GET every E seconds for S seconds; each outcome with its time.
  {"do": "hold", "host": H, "port": P, "seconds": S}
      One TCP connection, opened at once and used only after S seconds
      (an HTTP/1.0 GET on it): whether a connection established before
      something happened still works after it.
  {"do": "udp", "host": H, "port": P, "seconds": S, "every": E}
      One UDP socket (one source port, so one conntrack entry) sending a
      datagram every E seconds for S seconds; each answer or timeout.
"""
import json
import socket
import sys
import time
import urllib.request


def get(url, timeout=2.0):
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.read().decode().strip()


def error_name(err):
    reason = getattr(err, "reason", None)
    if isinstance(reason, OSError):
        err = reason
    if isinstance(err, ConnectionRefusedError):
        return "refused"
    if isinstance(err, (socket.timeout, TimeoutError)):
        return "timeout"
    return type(err).__name__ + ": " + str(err)


def http(url, count):
    bodies, errors = {}, []
    for _ in range(count):
        try:
            body = get(url)
            bodies[body] = bodies.get(body, 0) + 1
        except OSError as err:
            errors.append(error_name(err))
    return {"bodies": bodies, "errors": errors}


def connect(host, port):
    start = time.monotonic()
    try:
        socket.create_connection((host, port), timeout=3).close()
        result = "ok"
    except OSError as err:
        result = error_name(err)
    return {"result": result, "ms": (time.monotonic() - start) * 1000}


def until_http(url, limit):
    start = time.monotonic()
    tries, last = 0, None
    while time.monotonic() - start < limit:
        tries += 1
        try:
            body = get(url, timeout=0.5)
            return {"ok": True, "body": body, "tries": tries,
                    "ms": (time.monotonic() - start) * 1000}
        except OSError as err:
            last = error_name(err)
        time.sleep(0.05)
    return {"ok": False, "last": last, "tries": tries,
            "ms": (time.monotonic() - start) * 1000}


def loop(url, seconds, every):
    start = time.monotonic()
    outcomes = []
    while time.monotonic() - start < seconds:
        at = time.monotonic() - start
        try:
            outcomes.append([at, "ok", get(url, timeout=1.0)])
        except OSError as err:
            outcomes.append([at, "error", error_name(err)])
        time.sleep(every)
    return {"outcomes": outcomes}


def hold(host, port, seconds):
    sock = socket.create_connection((host, port), timeout=3)
    time.sleep(seconds)
    sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
    data = b""
    while True:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    sock.close()
    head, _, body = data.decode().partition("\r\n\r\n")
    return {"status": head.split("\r\n")[0], "body": body.strip()}


def udp(host, port, seconds, every):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(every)
    start = time.monotonic()
    outcomes = []
    while time.monotonic() - start < seconds:
        at = time.monotonic() - start
        sock.sendto(b"who", (host, port))
        try:
            data, _ = sock.recvfrom(512)
            outcomes.append([at, "ok", data.decode()])
            time.sleep(every)
        except OSError as err:
            outcomes.append([at, "error", error_name(err)])
    return {"outcomes": outcomes}


def main():
    args = json.loads(sys.argv[1])
    what = args.pop("do")
    result = {"http": http, "connect": connect, "until_http": until_http,
              "loop": loop, "hold": hold, "udp": udp}[what](**args)
    print(json.dumps(result), flush=True)


main()
