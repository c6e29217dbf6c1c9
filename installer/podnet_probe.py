"""The script `installer check` runs on a node to put a probe on the pod network (the host side of podnet.py).

It does what kubelet does for a pod sandbox, with the node's own CNI configuration and plugins: a network
namespace, the plugins of the first config in the CNI conf dir called in order per the CNI spec (config on
stdin, the rest in CNI_* variables, each plugin's result as the next one's prevResult), then a TCP listener
inside the namespace. `del` undoes it in reverse (CNI DEL, listener, namespace). Written for the Python the
target hosts have (CentOS 7: 2.7; others: 3.x), standard library only. Kept as text: it is sent to the host.
"""

PROBE_SCRIPT = r'''
import json, os, signal, socket, subprocess, sys, time

cmd, probe_id, conf_dir, bin_dir, port, ttl = sys.argv[1:7]
port, ttl = int(port), int(ttl)
ns = probe_id
state_file = "/run/%s.json" % probe_id


def out(doc, rc=0):
    sys.stdout.write(json.dumps(doc) + "\n")
    sys.exit(rc)


def fail(stage, msg):
    out({"error": msg, "stage": stage}, 3)


def conf_file():
    try:
        names = sorted(os.listdir(conf_dir))
    except OSError as e:
        fail("config", "cannot read CNI conf dir %s: %s" % (conf_dir, e))
    for n in names:
        if n.endswith((".conflist", ".conf", ".json")):
            return os.path.join(conf_dir, n)
    fail("config", "no CNI configuration in %s (kubelet: cni config uninitialized)" % conf_dir)


def plugins(path):
    with open(path) as f:
        doc = json.load(f)
    if "plugins" in doc:
        return doc.get("name"), doc.get("cniVersion", "0.3.1"), doc["plugins"]
    return doc.get("name"), doc.get("cniVersion", "0.3.1"), [doc]


def call(command, plugin, name, version, prev):
    conf = dict(plugin)
    conf["name"], conf["cniVersion"] = name, version
    if prev is not None:
        conf["prevResult"] = prev
    if (plugin.get("capabilities") or {}).get("portMappings"):
        conf["runtimeConfig"] = {"portMappings": []}
    env = dict(os.environ, CNI_COMMAND=command, CNI_CONTAINERID=probe_id, CNI_NETNS="/var/run/netns/" + ns,
               CNI_IFNAME="eth0", CNI_PATH=bin_dir,
               CNI_ARGS="IgnoreUnknown=1;K8S_POD_NAMESPACE=kube-system;K8S_POD_NAME=" + probe_id)
    exe = os.path.join(bin_dir, plugin.get("type", ""))
    if not os.access(exe, os.X_OK):
        return None, "CNI plugin %s is not in %s" % (plugin.get("type"), bin_dir)
    p = subprocess.Popen([exe], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    o, e = p.communicate(json.dumps(conf).encode())
    o, e = o.decode("utf-8", "replace"), e.decode("utf-8", "replace")
    if p.returncode != 0:
        try:
            msg = json.loads(o).get("msg") or o
        except ValueError:
            msg = o or e
        return None, "%s %s: %s" % (plugin.get("type"), command, (msg or e).strip()[:400])
    if command != "ADD":
        return {}, None
    try:
        return json.loads(o), None
    except ValueError:
        return None, "%s ADD printed no result: %s" % (plugin.get("type"), o[:200])


def teardown():
    try:
        with open(state_file) as f:
            st = json.load(f)
    except (OSError, IOError, ValueError):
        st = {}
    if st.get("pid"):
        try:
            os.kill(int(st["pid"]), signal.SIGTERM)
        except OSError:
            pass
    errors = []
    path = st.get("conf")
    if path and os.path.exists(path):
        name, version, pl = plugins(path)
        for plugin in reversed(pl):
            _, err = call("DEL", plugin, name, version, None)
            if err:
                errors.append(err)
    subprocess.call(["ip", "netns", "del", ns], stderr=open(os.devnull, "w"))
    try:
        os.unlink(state_file)
    except OSError:
        pass
    return errors


LISTENER = ("import socket,time,sys\n"
            "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
            "s.bind(('0.0.0.0', %d)); s.listen(64); s.settimeout(1.0)\n"
            "sys.stdout.write('ready\\n'); sys.stdout.flush()\n"
            "end = time.time() + %d\n"
            "while time.time() < end:\n"
            "    try:\n"
            "        c, _ = s.accept(); c.sendall(b'k8s-offline-probe\\n'); c.close()\n"
            "    except socket.timeout:\n"
            "        pass\n")

if cmd == "del":
    errs = teardown()
    out({"deleted": probe_id, "errors": errs})

teardown()  # a probe left by an interrupted check: start clean
path = conf_file()
name, version, pl = plugins(path)
if subprocess.call(["ip", "netns", "add", ns]) != 0:
    fail("netns", "ip netns add %s failed" % ns)
with open(state_file, "w") as f:
    json.dump({"conf": path}, f)
prev = None
for plugin in pl:
    prev, err = call("ADD", plugin, name, version, prev)
    if err:
        teardown()
        fail("cni", err)
ips = [i.get("address", "").split("/")[0] for i in (prev or {}).get("ips", [])]
ip4 = [a for a in ips if a and ":" not in a]
if not ip4:
    teardown()
    fail("cni", "the CNI chain of %s gave no IPv4 address: %s" % (path, json.dumps(prev)[:300]))
lp = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, "-c", LISTENER % (port, ttl)],
                      stdout=subprocess.PIPE, stdin=open(os.devnull), stderr=open(os.devnull, "w"),
                      close_fds=True, preexec_fn=os.setsid)
line = lp.stdout.readline()
if not line.startswith(b"ready"):
    teardown()
    fail("listener", "the TCP listener in the probe namespace did not start")
with open(state_file, "w") as f:
    json.dump({"conf": path, "pid": lp.pid}, f)
out({"ip": ip4[0], "conf": path, "netns": ns})
'''

# Run on a source host (or inside a probe's namespace): TCP connect to every target, with the route used
# when it fails. argv: lines "name ip port" on stdin. bash's /dev/tcp needs no extra tool on the host.
# one process per source: every target's connect at once (non-blocking, select), `ip route get` only for
# a target not reached; lines "ok NAME" or "fail NAME ROUTE"; targets "NAME IP PORT" on stdin. (A shell loop
# with `timeout bash -c 'exec 3<>/dev/tcp/..'` per target cost three processes per pair: at 24 hosts, about
# 3,000 processes per check.)
REACH_SCRIPT = r'''
import errno, select, socket, subprocess, sys, time

timeout = float(sys.argv[2])  # argv: -c reach TIMEOUT
pending, reached, missed = {}, [], []  # pending: {socket: (name, ip)}; missed: [(name, ip)]
for row in sys.stdin.read().splitlines():
    f = row.split()
    if len(f) != 3:
        continue
    name, ip, port = f
    s = socket.socket(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM)
    s.setblocking(0)
    rc = s.connect_ex((ip, int(port)))
    if rc in (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN):
        pending[s] = (name, ip)
        continue
    if rc == 0:
        reached.append(name)
    else:
        missed.append((name, ip))
    s.close()
deadline = time.time() + timeout
while pending and time.time() < deadline:
    _, ready, _ = select.select([], list(pending), [], max(0, deadline - time.time()))
    for s in ready:
        name, ip = pending.pop(s)
        if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
            reached.append(name)
        else:
            missed.append((name, ip))
        s.close()
missed += list(pending.values())
for name in reached:
    sys.stdout.write("ok %s\n" % name)
for name, ip in missed:
    try:
        p = subprocess.Popen(["ip", "route", "get", ip], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        route = p.communicate()[0].decode("utf-8", "replace").strip().splitlines()
    except OSError as e:
        route = ["no route shown: %s" % e]
    sys.stdout.write("fail %s %s\n" % (name, route[0] if route else "no route shown"))
'''
