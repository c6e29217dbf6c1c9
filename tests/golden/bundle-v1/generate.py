"""How k8s-1.10.3.bundle.tar.zst here was made: a format 1 bundle, as the bundler wrote them until format 2.

It was run ONCE with the sources of commit 6084910 (the last one writing format_version 1) on the path:
    git worktree add /tmp/v1 6084910 && PYTHONPATH=/tmp/v1 python tests/golden/bundle-v1/generate.py OUT
It refuses to run with newer sources (they write format 2). The `components` map of its manifest is what that
commit's bundler/assemble.components made of the lock below (trust/ and repo/ entries included); the members are
small stand-ins at the paths a real build uses. The signing keys were thrown away: only bundle.pub and
bundle-p256.pub are committed, so the bundle's bytes cannot be re-made, only read (tests/unit/test_bundle_v1.py).
"""

from __future__ import annotations

import hashlib
import shutil
import sys
import tempfile
from pathlib import Path

from bundler import assemble
from bundler import lock as lock_mod
from bundler import spec as spec_mod
from contract import bundle as fmt
from contract.bundle import layout

ROOT = Path(__file__).resolve().parents[3]
CREATED = "2018-05-21T10:00:00Z"
CENTOS = "6341AB2753D78A78A7C27BB124C6A8A7F4A80EB5"
DOCKER = "060A61C51B558A7F742B77AAC52FEB6B621E9F35"


def h(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def sample_lock(spec: spec_mod.Spec) -> lock_mod.Lock:
    B = lock_mod.LockedBinary
    binaries = (
        B(name="kubernetes-server", version="1.10.3", url="https://dl.k8s.io/v1.10.3/kubernetes-server-linux-amd64"
          ".tar.gz", sha256=h("ks"), size=10, pin_source="upstream"),
        B(name="etcd", version="3.3.1", url="https://github.com/coreos/etcd/releases/download/v3.3.1/etcd-v3.3.1-"
          "linux-amd64.tar.gz", sha256=h("etcd"), size=10, pin_source="upstream"),
        B(name="flannel", version="0.10.0", url="https://github.com/coreos/flannel/releases/download/v0.10.0/"
          "flannel-v0.10.0-linux-amd64.tar.gz", sha256=h("fl"), size=10, pin_source="first-seen"),
        B(name="docker-compose", version="1.18.0", url="https://github.com/docker/compose/releases/download/1.18.0/"
          "docker-compose-Linux-x86_64", sha256=h("dc"), size=10, pin_source="spec"),
    )
    repos = (
        lock_mod.LockedRepo(name="base", baseurl="http://mirror.centos.org/centos/7/os/x86_64/", gpgcheck=True,
                            gpgkey="http://mirror.centos.org/centos/7/os/x86_64/RPM-GPG-KEY-CentOS-7",
                            key_sha256=h("key"), key_size=1690, fingerprints=(CENTOS,), metadata="unsigned"),
        lock_mod.LockedRepo(name="docker-ce-stable", baseurl="https://download.docker.com/linux/centos/7/x86_64/"
                            "stable/", gpgcheck=True, gpgkey="https://download.docker.com/linux/centos/gpg",
                            key_sha256=h("dkey"), key_size=1627, fingerprints=(DOCKER,), metadata="signed"),
        lock_mod.LockedRepo(name="local", baseurl="http://repo.example.test/el7/", gpgcheck=False),
    )
    R = lock_mod.LockedRpm
    rpms = (
        R(name="docker-ce", version="18.09.1", release="3.el7", arch="x86_64", repo="docker-ce-stable",
          url="https://download.docker.com/linux/centos/7/x86_64/stable/Packages/docker-ce-18.09.1-3.el7.x86_64.rpm",
          sha256=h("docker-ce"), size=10, signature=DOCKER),
        R(name="haproxy", version="1.5.18", release="8.el7", arch="x86_64", repo="base",
          url="http://mirror.centos.org/centos/7/os/x86_64/Packages/haproxy-1.5.18-8.el7.x86_64.rpm",
          sha256=h("haproxy"), size=10, signature=CENTOS),
        R(name="tool", version="1.0", release="1.el7", arch="x86_64", repo="local",
          url="http://repo.example.test/el7/tool-1.0-1.el7.x86_64.rpm", sha256=h("tool"), size=10,
          signature=lock_mod.UNCHECKED),
        R(name="oldpkg", epoch=1, version="2.0", release="1.el7", arch="noarch", repo="base",
          url="http://mirror.centos.org/centos/7/os/x86_64/Packages/oldpkg-2.0-1.el7.noarch.rpm",
          sha256=h("oldpkg"), size=10, signature=None),
    )
    images = (
        lock_mod.LockedImage(ref="k8s.gcr.io/pause-amd64:3.1", digest="sha256:" + h("pause"),
                             media_type="application/vnd.docker.distribution.manifest.v2+json", size=10,
                             platforms=("linux/amd64",), blobs=(("sha256:" + h("pause"), 10, "m"),)),
    )
    return lock_mod.Lock(spec_sha256=h("spec"), created=CREATED, name=spec.name, version=spec.version,
                         options=spec.options.model_dump(), binaries=binaries, repos=repos, rpms=rpms,
                         images=images).sorted()


def main(out: Path) -> None:
    if layout.FORMAT_VERSION != 1:
        sys.exit(f"these sources write format {layout.FORMAT_VERSION}: run with those of commit 6084910")
    spec = spec_mod.load(ROOT / "bundle-spec.yaml")
    lk = sample_lock(spec)
    lock_bytes = lock_mod.dump(lk).encode()
    work = Path(tempfile.mkdtemp(prefix="golden-v1-"))
    try:
        members = {
            "binaries/kubernetes-server-linux-amd64.tar": b"kubernetes-server stand-in\n",
            "binaries/etcd-v3.3.1-linux-amd64.tar": b"etcd stand-in\n",
            "binaries/flannel-v0.10.0-linux-amd64.tar": b"flannel stand-in\n",
            "binaries/docker-compose-Linux-x86_64": b"#!/bin/sh\necho docker-compose stand-in\n",
            "rpms/Packages/docker-ce-18.09.1-3.el7.x86_64.rpm": b"docker-ce rpm stand-in\n",
            "rpms/Packages/haproxy-1.5.18-8.el7.x86_64.rpm": b"haproxy rpm stand-in\n",
            "rpms/Packages/oldpkg-2.0-1.el7.noarch.rpm": b"oldpkg rpm stand-in\n",
            "rpms/unchecked/Packages/tool-1.0-1.el7.x86_64.rpm": b"tool rpm stand-in\n",
            "images/oci-layout": b'{"imageLayoutVersion":"1.0.0"}',
            "manifests/kube-dns.yaml.j2": b"# addon stand-in\n",
            "installer/wheels/k8s_offline-0.1.0-py3-none-any.whl": b"wheel stand-in\n",
            layout.LOCK: lock_bytes,
        }
        entries = []
        for path, data in members.items():
            p = work / "src" / path
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
            mode = 0o755 if path == "binaries/docker-compose-Linux-x86_64" else 0o644
            entries.append(fmt.Entry(path, p, len(data), hashlib.sha256(data).hexdigest(), mode))
        keys = fmt.generate_keys(work / "keys")
        res = fmt.write_bundle(out, spec.name, spec.version, entries, fmt.load_private_key(keys.key),
                               p256_key=fmt.load_p256_private_key(keys.p256_key),
                               spec_sha256=h("spec"), lock_sha256=hashlib.sha256(lock_bytes).hexdigest(),
                               components=assemble.components(spec, lk), created=CREATED, level=19)
        shutil.copyfile(keys.pub, out / "bundle.pub")
        shutil.copyfile(keys.p256_pub, out / "bundle-p256.pub")
        print(res.path, res.size)
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
