"""`installer receipt`: what this site holds, for `bundler build --since` on the connected side (contract/receipt.py).

The bundle part is what a delta is computed against: the bundle the state directory keeps unpacked, every file
listed with the size and sha256 of its signed manifest, and only when the file is there with that size (a file
lost since unpack is not claimed, so the delta carries it again). A changed byte inside a file of the right size
is caught on site, where every file taken from the base is hashed against the new signed manifest. The hosts'
part (installed RPMs, the executables the installer put there, by sha256; one facts round trip per host, the
same read `plan` does, writing nothing) says what runs where. The registry part: of every image of the
unpacked bundle, which blobs the site registry answers for in the repository seed pushes it to (HEAD each;
nothing pushed), so what the connected side sees as "the site has it" is what the site really serves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

from contract.bundle import layout
from contract.bundle.delta import BaseDir
from contract.bundle.manifest import now_created
from contract.errors import Error
from contract.receipt import Receipt, ReceiptBundle, ReceiptFile, ReceiptHost
from installer import checks as checks_mod
from installer import components, egress, harbor_install
from installer import facts as facts_mod
from installer.hosts.connector import failures, run_on
from installer.inventory import Inventory
from installer.options import first_line
from installer.state import StateDir, write_atomic


def bundle_part(state: StateDir) -> Tuple[Tuple[ReceiptBundle, ...], List[str]]:
    """(the unpacked bundle as a receipt lists it, notes on what was left out)."""
    info = state.bundle_info()
    if not info or not Path(info.get("dir", "")).is_dir():
        return (), ["no unpacked bundle in the state directory: a delta needs a base (run `installer apply` or "
                    "`installer unpack` with a complete bundle first)"]
    base = BaseDir(Path(info["dir"]))
    if base.manifest is None:
        return (), [f"{base.root} was unpacked by an installer that did not keep the signed manifest: apply the "
                    "bundle once more with this installer to make it a base"]
    files, lost = [], []
    for f in base.manifest.files:
        p = base.root / f.path
        try:
            ok = p.is_file() and not p.is_symlink() and p.stat().st_size == f.size
        except OSError:
            ok = False
        (files if ok else lost).append(f)
    notes = [f"{len(lost)} file(s) of the unpacked bundle are missing or have another size and are not claimed "
             f"(a delta carries them again), first {lost[0].path}"] if lost else []
    m = base.manifest
    return (ReceiptBundle(m.name, m.version, base.manifest_sha256, m.lock_sha256,
                          tuple(ReceiptFile(f.path, f.size, f.sha256) for f in files)),), notes


def executable_paths() -> Tuple[str, ...]:
    """Where the installer puts executables: every binary of the component table, at its installed path."""
    return tuple(sorted({b.path for c in components.COMPONENTS for b in c.binaries}))


def hosts_part(inv: Inventory, connect: Callable, paths: Sequence[str], max_parallel: int
               ) -> Dict[str, ReceiptHost]:
    """Per inventory host: installed RPMs (name-version-release) and the sha256 of each executable present."""

    def one(name: str) -> ReceiptHost:
        conn = connect(inv, inv.host(name))
        try:
            f = facts_mod.gather(conn, paths, (), update_cache=False)
        finally:
            conn.close()
        rpms = tuple(sorted(f"{n}-{v}" for n, v in (f.packages or {}).items()))
        return ReceiptHost(rpms, {p: s.sha256 for p, s in f.files.items() if s is not None})

    names = [h.name for h in inv.hosts]
    results = run_on(names, one, max_parallel)
    bad = failures(results)
    if bad:
        raise Error(f"cannot read {len(bad)} host(s): {', '.join(sorted(bad))}", context="writing the site receipt",
                    details=[f"{h}: {first_line(e)}" for h, e in sorted(bad.items())],
                    hint="check that each host is up and reachable over ssh; nothing was written")
    return {n: r for n, r in results.items()}  # type: ignore[misc]


def registry_part(inv: Inventory, state: StateDir, session) -> Tuple[str, Tuple[str, ...], List[str]]:
    """(registry address, the unpacked bundle's blobs it holds, notes) by a HEAD per blob; nothing is pushed."""
    from installer.registry.seed import Layout

    info = state.bundle_info() or {}
    images_dir = Path(info.get("dir", "/nonexistent")) / layout.IMAGES_DIR
    if not (images_dir / "index.json").is_file():
        return "", (), ["the registry was not asked: no unpacked bundle with images to ask about"]
    _, naming = egress.image_roles(images_dir.parent, inv)
    from installer.pki import Pki

    access = harbor_install.access(inv, state.root, Pki(state.root).crt_path("ca"))
    client = checks_mod.registry_client(inv, session, **access)
    held = set()
    try:
        for img in Layout(images_dir).images(inv.registry.project, naming):
            for digest in img.blobs:
                if digest not in held and client.blob_size(img.repo, digest) is not None:
                    held.add(digest)
    except Error as e:
        return inv.registry.endpoint, (), [f"the registry {inv.registry.endpoint} could not be asked "
                                           f"({e.message}): its blobs are not listed"]
    return inv.registry.endpoint, tuple(sorted(held)), []


def write(inv: Inventory, state: StateDir, out: Path, connect: Callable, max_parallel: int,
          created: str = "", session=None) -> Tuple[Receipt, List[str]]:
    """Gather the receipt and write it to `out` (atomically, 0644: it holds no secret)."""
    bundles, notes = bundle_part(state)
    hosts = hosts_part(inv, connect, executable_paths(), max_parallel)
    registry, blobs, more = registry_part(inv, state, session) if session is not None else ("", (), [])
    receipt = Receipt(created=created or now_created(), bundles=bundles, hosts=hosts, registry=registry,
                      registry_blobs=blobs)
    notes = notes + more
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, receipt.to_bytes(), 0o644)
    return receipt, notes


def text(receipt: Receipt, out: Path, notes: Sequence[str]) -> str:
    lines = [f"wrote {out}: what this site holds, for `bundler build --since {out.name}`"]
    for b in receipt.bundles:
        lines.append(f"  bundle {b.name} {b.version} (manifest sha256 {b.manifest_sha256[:16]}): {len(b.files)} "
                     f"files, {sum(f.size for f in b.files)} bytes")
    if receipt.registry:
        lines.append(f"  registry {receipt.registry}: holds {len(receipt.registry_blobs)} of the bundle's blobs")
    for name, h in sorted(receipt.hosts.items()):
        lines.append(f"  {name}: {len(h.rpms)} RPMs, {len(h.binaries)} executables")
    lines += [f"  note: {n}" for n in notes]
    return "\n".join(lines)
