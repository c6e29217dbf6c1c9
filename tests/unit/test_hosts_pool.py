"""One connection per host for a whole run: Hosts lends its open connectors (Borrowed) to code that takes a
connector factory, so apply's checks reuse the run's ssh masters instead of a second handshake per host."""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from installer import apply as apply_mod
from installer import checks as checks_mod
from installer import inventory as inventory_mod
from installer import plan_model
from installer.hosts.connector import Result
from installer.options import Borrowed, Hosts, Options
from installer.pki import Pki
from installer.state import StateDir

ROOT = Path(__file__).resolve().parents[2]


class Conn:
    """A connector that counts what is done with it."""

    def __init__(self, name: str, made: list) -> None:
        self.name, self.ran, self.closed = name, [], 0
        made.append(self)

    def run(self, cmd, **kw):
        self.ran.append(cmd)
        return Result(0, f"ran {cmd}", "")

    def put(self, path, content, mode, owner="root", group="root"):
        self.ran.append(("put", path, content, mode, owner, group))

    def put_file(self, path, local, mode, owner="root", group="root"):
        self.ran.append(("put_file", path, local, mode, owner, group))

    def get(self, path):
        return b"content of " + path.encode()

    def close(self):
        self.closed += 1


@pytest.fixture
def inv():
    return inventory_mod.load(ROOT / "inventory.example.yaml")


def pool(inv, made):
    return Hosts(inv, Options(connector_for=lambda i, h: Conn(h.name, made), session=None))


def test_a_borrowed_connector_is_the_pools_and_its_close_leaves_it_open(inv):
    made = []
    hosts = pool(inv, made)
    h = inv.hosts[0]
    b = hosts.connector_for(inv, h)
    assert isinstance(b, Borrowed) and b.name == h.name
    assert b.run("true").stdout == "ran true"
    b.put("/etc/x", b"x", 0o644)
    b.put_file("/usr/bin/y", Path("/y"), 0o755, "root", "wheel")
    assert b.get("/etc/z") == b"content of /etc/z"
    b.close()
    hosts.connector_for(inv, h).run("again")
    assert len(made) == 1 and made[0].closed == 0  # one connection, still open
    assert made[0].ran == ["true", ("put", "/etc/x", b"x", 0o644, "root", "root"),
                           ("put_file", "/usr/bin/y", Path("/y"), 0o755, "root", "wheel"), "again"]
    assert hosts[h.name] is made[0]
    hosts.close()
    assert made[0].closed == 1


def test_another_inventory_gets_its_own_connector(inv):
    made = []
    hosts = pool(inv, made)
    other = inventory_mod.load(ROOT / "inventory.example.yaml")
    c = hosts.connector_for(other, other.hosts[0])
    assert not isinstance(c, Borrowed) and len(made) == 1
    hosts.close()
    assert made[0].closed == 0  # not the pool's: whoever asked closes it


def test_one_connection_per_host_when_many_threads_ask_at_once(inv):
    made = []
    hosts = pool(inv, made)
    start = threading.Barrier(8)

    def ask():
        start.wait()
        for h in inv.hosts:
            hosts[h.name].run("x")

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(c.name for c in made) == sorted(h.name for h in inv.hosts)
    assert all(len(c.ran) == 8 for c in made)


def test_apply_runs_its_checks_over_the_runs_connections(monkeypatch, inv, tmp_path):
    """Executor and checks share one connection per host; it is closed once, after the checks."""
    made = []
    bundle = SimpleNamespace(name="k8s", version="1", digest="d" * 64, fingerprint="f", reused=True, dir=tmp_path, trust=(),
                             components={})
    site = SimpleNamespace(inv=inv, pki=Pki(tmp_path), state=StateDir(tmp_path).ensure(), bundle=bundle,
                           pki_report=None)
    step = plan_model.Step(inv.hosts[0].name, "put", "/etc/x", "test")
    plan = plan_model.Plan((), (plan_model.Phase("p", (plan_model.Wave((step,), ()),)),))

    class Executor:
        def __init__(self, site_, hosts, opts):
            self.hosts = hosts

        def run(self, p):
            for h in inv.hosts:
                self.hosts[h.name].run("step")
            return apply_mod.Outcome(p)

    def run_all(inv_, pki, session, connector_for, max_parallel):
        for h in inv_.hosts:
            c = connector_for(inv_, h)
            c.run("check")
            c.close()  # podnet and image_pulls close what their factory gave them
        assert all(c.closed == 0 for c in made)  # still open for the next check
        return checks_mod.Report([checks_mod.Result("test", "all", True, "ok")])

    monkeypatch.setattr(apply_mod, "load_site", lambda *a, **k: site)
    monkeypatch.setattr(apply_mod, "make_plan", lambda *a, **k: plan)
    monkeypatch.setattr(apply_mod.etcd_backup, "before_changes", lambda *a, **k: None)
    monkeypatch.setattr(apply_mod, "Executor", Executor)
    monkeypatch.setattr(apply_mod.checks_mod, "run_all", run_all)
    monkeypatch.setattr(apply_mod, "images_results", lambda site_, session: [])
    monkeypatch.setattr(apply_mod, "record_etcd_members", lambda site_: None)
    monkeypatch.setattr(apply_mod.versions, "host_versions", lambda *a: {})
    opts = Options(connector_for=lambda i, h: Conn(h.name, made), session=None)
    apply_mod.apply_command(tmp_path / "inv", tmp_path / "b", tmp_path / "pub", tmp_path, opts)
    assert sorted(c.name for c in made) == sorted(h.name for h in inv.hosts)  # one connection per host
    assert all(c.ran == ["step", "check"] and c.closed == 1 for c in made)


class Slow(Conn):
    """A connector whose connect() takes a while (an ssh handshake), or fails for the hosts in `down`."""

    def __init__(self, name, made, down=(), started=None):
        super().__init__(name, made)
        self.down, self.started, self.connected = down, started, threading.Event()

    def connect(self):
        if self.started is not None:
            self.started.append(self.name)
        if self.name in self.down:
            raise apply_mod.Error(f"{self.name}: cannot connect over ssh", hint="check the host")
        threading.Event().wait(0.05)
        self.connected.set()


def test_open_early_connects_every_host_at_once_and_the_first_use_waits_for_it(inv):
    made, started = [], []
    hosts = Hosts(inv, Options(connector_for=lambda i, h: Slow(h.name, made, started=started), session=None,
                               max_parallel=32))
    hosts.open_early([h.name for h in inv.hosts])
    assert len(made) == len(inv.hosts)  # every connector made now, connecting in the background
    for h in inv.hosts:
        c = hosts[h.name]
        assert c.connected.is_set()  # the first use came after the handshake
    assert sorted(started) == sorted(h.name for h in inv.hosts)
    hosts.close()
    assert all(c.closed == 1 for c in made)


def test_an_early_connect_that_failed_is_raised_on_every_use_of_that_host_only(inv):
    made = []
    bad = inv.hosts[1].name
    hosts = Hosts(inv, Options(connector_for=lambda i, h: Slow(h.name, made, down={bad}), session=None))
    hosts.open_early([h.name for h in inv.hosts])
    for _ in range(2):
        with pytest.raises(apply_mod.Error, match="cannot connect over ssh"):
            hosts[bad]
    assert hosts[inv.hosts[0].name].name == inv.hosts[0].name
    hosts.close()


def test_close_waits_for_early_connects_then_closes_them_all(inv):
    made = []
    hosts = Hosts(inv, Options(connector_for=lambda i, h: Slow(h.name, made), session=None, max_parallel=1))
    hosts.open_early([h.name for h in inv.hosts])
    hosts.close()  # right away: queued connects are dropped, the running one is waited for
    assert all(c.closed == 1 for c in made) and len(made) == len(inv.hosts)
    assert hosts._pool is None and not hosts._early


def test_connectors_without_connect_are_not_opened_early(inv):
    made = []
    hosts = pool(inv, made)
    hosts.open_early([h.name for h in inv.hosts])
    assert hosts._pool is None and all(c.ran == [] for c in made)
    hosts.close()


def test_open_site_connects_once_the_inventory_is_read_and_closes_when_loading_fails(monkeypatch, inv, tmp_path):
    made, started = [], []
    opts = Options(connector_for=lambda i, h: Slow(h.name, made, started=started), session=None)

    def load_site(*a, on_inventory=None, **k):
        on_inventory(inv)
        # connecting while the rest of the site is prepared: every host, the registry host Harbor goes on too
        assert sorted(c.name for c in made) == sorted(apply_mod.host_names(inv))
        assert len(made) == len(inv.hosts) + 1
        raise apply_mod.Error("bundle signature does not verify")

    monkeypatch.setattr(apply_mod, "load_site", load_site)
    with pytest.raises(apply_mod.Error, match="signature"):
        apply_mod.open_site(tmp_path / "inv", tmp_path / "b", tmp_path / "pub", tmp_path, opts)
    assert all(c.closed == 1 for c in made)  # no master outlives a failed load


def test_open_site_returns_the_pool_it_opened_for_the_sites_inventory(monkeypatch, inv, tmp_path):
    made = []
    opts = Options(connector_for=lambda i, h: Slow(h.name, made), session=None)
    site = SimpleNamespace(inv=inv)

    def load_site(*a, on_inventory=None, **k):
        on_inventory(inv)
        return site

    monkeypatch.setattr(apply_mod, "load_site", load_site)
    got, hosts = apply_mod.open_site(tmp_path / "inv", tmp_path / "b", tmp_path / "pub", tmp_path, opts)
    assert got is site and hosts.inv is inv and len(made) == len(apply_mod.host_names(inv))
    assert all(hosts[h.name].connected.is_set() for h in inv.hosts)
    hosts.close()
