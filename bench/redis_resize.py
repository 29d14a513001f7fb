# redis_resize.py: bench/convert --redis: redis-server in a runc container
# (xmem-runtime; io.xmem.local-limit=512M, local-first, a file directory)
# filled with 200 MiB of keys, resized to 64M while redis-benchmark runs
# against it, then back to 512M: redis-benchmark must report no error, the
# cgroup's usage must come under 64 MiB, and every key must read back, at
# 64M and again after the way back. See bench/README.md.
import json, os, shutil, socket, subprocess, time

MIB = 1 << 20
KEYS = 51200          # x 4 KiB = 200 MiB
VALUE = 4096


def value_of(i):
    seed = ("%08d" % i).encode()
    return (seed * (VALUE // len(seed) + 1))[:VALUE]


def resp(*args):
    out = b"*%d\r\n" % len(args)
    for a in args:
        a = a if isinstance(a, bytes) else str(a).encode()
        out += b"$%d\r\n%s\r\n" % (len(a), a)
    return out


class Conn:
    def __init__(self, port):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.buf = b""

    def line(self):
        while b"\r\n" not in self.buf:
            chunk = self.s.recv(1 << 20)
            if not chunk:
                raise RuntimeError("redis closed the connection")
            self.buf += chunk
        ln, self.buf = self.buf.split(b"\r\n", 1)
        return ln

    def exact(self, n):
        while len(self.buf) < n + 2:
            chunk = self.s.recv(1 << 20)
            if not chunk:
                raise RuntimeError("redis closed the connection")
            self.buf += chunk
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def reply(self):
        ln = self.line()
        if ln.startswith(b"$"):
            n = int(ln[1:])
            return None if n < 0 else self.exact(n)
        if ln.startswith(b"-"):
            raise RuntimeError("redis: " + ln.decode())
        return ln[1:]


def fill(port):
    c = Conn(port)
    for start in range(0, KEYS, 512):
        batch = range(start, min(KEYS, start + 512))
        c.s.sendall(b"".join(resp("SET", "xk:%d" % i, value_of(i)) for i in batch))
        for _ in batch:
            c.reply()


def verify(port):
    """Every key with its value; the count of bad ones."""
    c, bad = Conn(port), 0
    for start in range(0, KEYS, 512):
        batch = range(start, min(KEYS, start + 512))
        c.s.sendall(b"".join(resp("GET", "xk:%d" % i) for i in batch))
        for i in batch:
            if c.reply() != value_of(i):
                bad += 1
    return bad


def cg_u64(cg, f):
    with open(os.path.join(cg, f)) as fh:
        return int(fh.read().split()[0])


def run(b):
    """B: bench/convert's Bench (memd started, files dir at B.dir/files)."""
    srv = shutil.which("redis-server")
    if not srv or not shutil.which("redis-benchmark") or not shutil.which("runc"):
        return {"skipped": "redis-server, redis-benchmark or runc not installed"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    shim = os.path.abspath(b.exe("shim/libxmem-shim.so"))
    rootfs = os.path.join(b.dir, "rootfs")
    subprocess.run(["sh", os.path.join(root, "tests/integration/mkrootfs.sh"), rootfs, srv],
                   env=dict(os.environ, XMEM_SHIM=shim), check=True, capture_output=True)
    name = "xmem-bench-redis-%d" % os.getpid()
    bundle = os.path.join(b.dir, "redis")
    os.makedirs(bundle)
    subprocess.run(["runc", "spec", "--bundle", bundle], check=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cfg = os.path.join(bundle, "config.json")
    c = json.load(open(cfg))
    c["process"]["terminal"] = False
    c["process"]["args"] = ["/bin/redis-server", "--port", str(port), "--bind", "127.0.0.1",
                            "--save", "", "--appendonly", "no", "--protected-mode", "no"]
    c["root"] = {"path": rootfs, "readonly": True}
    c["linux"]["namespaces"] = [n for n in c["linux"]["namespaces"] if n["type"] != "network"]
    c["linux"]["cgroupsPath"] = "/" + name
    c["annotations"] = {"io.xmem.enable": "true", "io.xmem.local-limit": "512M",
                        "io.xmem.external": "1G", "io.xmem.policy": "local-first",
                        "io.xmem.file-dir": os.path.join(b.dir, "files")}
    json.dump(c, open(cfg, "w"))
    runc_root = os.path.join(b.dir, "runc")
    env = dict(os.environ, XMEM_SOCKET=b.sock, XMEM_RUNTIME="runc", XMEM_SHIM=shim)
    log = open(os.path.join(b.dir, "redis.log"), "w")
    p = subprocess.Popen([b.exe("oci/xmem-runtime"), "--root", runc_root, "run", "--bundle",
                          bundle, name], stdout=log, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, env=env)
    cg = "/sys/fs/cgroup/memory/" + name

    def stop():
        subprocess.run(["runc", "--root", runc_root, "kill", name, "KILL"], capture_output=True)
        try:
            p.wait(30)
        except subprocess.TimeoutExpired:
            p.kill()
        subprocess.run(["runc", "--root", runc_root, "delete", "--force", name],
                       capture_output=True)
    b.undo.append(stop)
    end = time.time() + 30
    while time.time() < end:
        try:
            Conn(port).s.sendall(resp("PING"))
            break
        except OSError:
            time.sleep(0.1)
    fill(port)
    r = {"filled_mib": KEYS * VALUE // MIB,
         "usage_before_mib": cg_u64(cg, "memory.usage_in_bytes") // MIB}
    argv = ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-d", "4096", "-r", "10000",
            "-t", "set,get", "-n", "100000", "-c", "8", "--csv"]
    # the baseline: the same benchmark at 512M, no resize, same run
    base = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    r["baseline_512m"] = [ln for ln in base.stdout.splitlines() if ln.startswith('"')]
    bench = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(1)
    t0 = time.time()
    b.ctl("resize", name, "--local-limit", "64M")
    under = None
    while time.time() < t0 + 60:
        if cg_u64(cg, "memory.limit_in_bytes") == 64 * MIB and \
                cg_u64(cg, "memory.usage_in_bytes") <= 64 * MIB:
            under = time.time() - t0
            break
        time.sleep(0.1)
    r["under_64m_s"] = under
    r["usage_at_64m_mib"] = cg_u64(cg, "memory.usage_in_bytes") // MIB
    out, _ = bench.communicate(timeout=600)
    r["benchmark_rc"] = bench.returncode
    r["benchmark_errors"] = [ln for ln in out.splitlines() if "ERR" in ln or "rror" in ln]
    r["across_resize"] = [ln for ln in out.splitlines() if ln.startswith('"')]
    r["bad_keys_at_64m"] = verify(port)
    b.ctl("resize", name, "--local-limit", "512M")
    time.sleep(3)
    r["bad_keys_after"] = verify(port)
    r["alive"] = p.poll() is None
    return r
