"""Pure parts of installer.registry: challenges, references, naming, error mapping, layout reading."""

from __future__ import annotations

import json

import pytest

from contract.errors import Error
from contract.reference import Reference
from installer.registry.client import FileSlice, failure_from_response, parse_challenge
from installer.registry.seed import Layout, original_ref, seeded_refs, target_repository
from tests.fixtures.harbor import layout as L


@pytest.mark.parametrize(
    "header,scheme,params",
    [
        (
            'Bearer realm="https://h/service/token",service="harbor-registry"',
            "bearer",
            {"realm": "https://h/service/token", "service": "harbor-registry"},
        ),
        (
            'Bearer realm="https://h/t",service="s",scope="repository:p/a:pull,push",error="insufficient_scope"',
            "bearer",
            {
                "realm": "https://h/t",
                "service": "s",
                "scope": "repository:p/a:pull,push",
                "error": "insufficient_scope",
            },
        ),
        ('Basic realm="test-registry"', "basic", {"realm": "test-registry"}),
        ("Basic realm=plain", "basic", {"realm": "plain"}),
        (None, "none", {}),
    ],
)
def test_parse_challenge(header, scheme, params):
    c = parse_challenge(header)
    assert (c.scheme, c.params) == (scheme, params)


@pytest.mark.parametrize(
    "text,expected",
    [
        ("k8s.gcr.io/pause-amd64:3.1", ("k8s.gcr.io", "pause-amd64", "3.1", None)),
        ("docker.io/coredns/coredns:1.1.3", ("docker.io", "coredns/coredns", "1.1.3", None)),
        ("coredns/coredns:1.1.3", ("docker.io", "coredns/coredns", "1.1.3", None)),
        ("busybox", ("docker.io", "library/busybox", "latest", None)),
        ("localhost:5000/a/b:7", ("localhost:5000", "a/b", "7", None)),
        (
            "quay.io/coreos/flannel@sha256:" + "a" * 64,
            ("quay.io", "coreos/flannel", None, "sha256:" + "a" * 64),
        ),
        (
            "quay.io/coreos/flannel:v0.10.0@sha256:" + "a" * 64,
            ("quay.io", "coreos/flannel", "v0.10.0", "sha256:" + "a" * 64),
        ),
    ],
)
def test_reference_parse(text, expected):
    r = Reference.parse(text)
    assert (r.registry, r.repository, r.tag, r.digest) == expected


@pytest.mark.parametrize(
    "ref,naming,repo",
    [
        ("k8s.gcr.io/pause-amd64:3.1", "last-component", "kubernetes/pause-amd64"),
        ("docker.io/coredns/coredns:1.1.3", "last-component", "kubernetes/coredns"),
        ("k8s.gcr.io/pause-amd64:3.1", "keep-path", "kubernetes/k8s.gcr.io/pause-amd64"),
        ("coredns/coredns:1.1.3", "keep-path", "kubernetes/docker.io/coredns/coredns"),
        ("localhost:5000/x:1", "keep-path", "kubernetes/localhost-5000/x"),
    ],
)
def test_target_repository(ref, naming, repo):
    assert target_repository(Reference.parse(ref), "kubernetes", naming) == repo


def test_unknown_naming_rule():
    with pytest.raises(Error) as err:
        target_repository(Reference.parse("a.io/b:1"), "p", "flat")
    assert "keep-path" in err.value.hint


@pytest.mark.parametrize("legacy", [False, True])
def test_seeded_refs_and_layout_walk(tmp_path, legacy):
    digests = L.build_layout(tmp_path, legacy=legacy)
    refs = seeded_refs(tmp_path, "harbor.example.com", "kubernetes")
    assert refs == {
        L.PAUSE: "harbor.example.com/kubernetes/pause-amd64:3.1",
        L.ETCD: "harbor.example.com/kubernetes/etcd-amd64:3.1.12",
        L.COREDNS: "harbor.example.com/kubernetes/coredns:1.1.3",
    }
    images = {i.original_ref: i for i in Layout(tmp_path).images("kubernetes", "last-component")}
    coredns = images[L.COREDNS]
    assert coredns.manifests[-1] == (digests[L.COREDNS], L.OCI_INDEX)  # the index last, after its children
    assert [m for _, m in coredns.manifests[:-1]] == [L.OCI_MANIFEST] * 2
    assert len(coredns.blobs) == 5  # shared base + 2 own layers + 2 configs
    assert {i: images[i].digest for i in images} == digests  # the upstream digests, one image each


def test_a_compat_entry_without_its_image_is_an_error(tmp_path):
    """An entry for skopeo 1.9 adds no image; without the true entry it stands for, the image would be lost."""
    digests = L.build_layout(tmp_path)
    path = tmp_path / "index.json"
    index = json.loads(path.read_text())
    index["manifests"] = [e for e in index["manifests"] if e["digest"] != digests[L.PAUSE]]
    path.write_text(json.dumps(index))
    with pytest.raises(Error) as err:
        Layout(tmp_path).images("kubernetes", "last-component")
    assert f"stands for {digests[L.PAUSE]}" in err.value.message and err.value.hint


def test_name_collision_is_an_error(tmp_path):
    w = L.LayoutWriter(tmp_path)
    for i, ref in enumerate(("k8s.gcr.io/pause:3.1", "docker.io/library/pause:3.1")):
        w.tag(w.image([w.layer({"f": str(i).encode()}, L.DOCKER_LAYER)], oci=False, label=str(i)), ref)
    w.finish()
    with pytest.raises(Error) as err:
        seeded_refs(tmp_path, "h", "p")
    assert "keep-path" in err.value.hint
    assert len(seeded_refs(tmp_path, "h", "p", naming="keep-path")) == 2


def test_missing_blob_and_missing_reference(tmp_path):
    digests = L.build_layout(tmp_path)
    index = json.loads((tmp_path / "index.json").read_text())
    pause = json.loads((tmp_path / "blobs/sha256" / digests[L.PAUSE][7:]).read_text())
    (tmp_path / "blobs/sha256" / pause["layers"][1]["digest"][7:]).unlink()
    with pytest.raises(Error) as err:
        seeded_refs(tmp_path, "h", "p")
    assert "missing from the image layout" in err.value.message
    entry = dict(index["manifests"][0], annotations={"org.opencontainers.image.ref.name": "3.1"})
    with pytest.raises(Error) as err:
        original_ref(entry)
    assert "io.containerd.image.name" in err.value.hint


# What docker-registry 2.8 answers when its storage write fails (captured from the real registry; ENOSPC
# reads "no space left on device" where this one, under RLIMIT_FSIZE, reads "file too large").
ENOSPC_BODY = (
    '{"errors":[{"code":"UNKNOWN","message":"unknown error","detail":"write /data/registry/docker/'
    'registry/v2/repositories/kubernetes/etcd-amd64/_uploads/0d0b/data: no space left on device"}]}'
)


@pytest.mark.parametrize(
    "status,body,scheme,message,hint",
    [
        (500, ENOSPC_BODY, "bearer", "out of storage space", "free space"),
        (
            500,
            '{"errors":[{"code":"UNKNOWN","message":"unknown error","detail":"open x: disk quota exceeded"}]}',
            "basic",
            "out of storage space",
            "data_dir",
        ),
        (
            401,
            '{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}',
            "basic",
            "refused the credentials",
            "password_file",
        ),
        (
            401,
            (
                '{"errors":[{"code":"UNAUTHORIZED","message":"authentication required","detail":[{"Type":'
                '"repository","Name":"nope/pause","Action":"push"}]}]}'
            ),
            "bearer",
            "may not push to nope/pause",
            "'nope' does not exist",
        ),
        (
            404,
            '{"errors":[{"code":"BLOB_UPLOAD_UNKNOWN","message":"blob upload unknown to registry"}]}',
            "none",
            "lost an upload",
            "re-run",
        ),
        (
            400,
            '{"errors":[{"code":"MANIFEST_INVALID","message":"manifest invalid"}]}',
            "none",
            "rejected a manifest",
            "Docker v2 schema 2",
        ),
        (502, "<html>Bad Gateway</html>", "none", "answered HTTP 502", "log"),
    ],
)
def test_failure_mapping(status, body, scheme, message, hint):
    e = failure_from_response(
        status, body, "harbor:443", "doing", repo="nope/pause", username="admin", scheme=scheme
    )
    assert message in e.message and hint in e.hint
    assert e.details and f"HTTP {status}" in e.details[0]


def test_file_slice_streams_a_window(tmp_path):
    f = tmp_path / "blob"
    f.write_bytes(bytes(range(256)) * 4)
    s = FileSlice(f, 100, 300)
    assert len(s) == 300
    data = b"".join(iter(lambda: s.read(64), b""))
    s.close()
    assert data == (bytes(range(256)) * 4)[100:400]


@pytest.mark.parametrize("legacy", [False, True])
def test_bundler_annotations_true_media_type_and_spec_reference(tmp_path, legacy):
    """A Docker manifest is pushed with its true type: listed under it (and once more for skopeo 1.9, an entry
    that adds no image), or, in layouts from before, under its OCI twin type with the true type annotated."""
    w = L.LayoutWriter(tmp_path, legacy=legacy)
    desc = w.image([w.layer({"f": b"x"}, L.DOCKER_LAYER)], oci=False)
    w.tag(desc, "docker.io/coredns/coredns:1.1.3", original="coredns/coredns:1.1.3")
    w.finish()
    entries = json.loads((tmp_path / "index.json").read_text())["manifests"]
    if legacy:
        assert [e["mediaType"] for e in entries] == [L.OCI_MANIFEST]
    else:
        assert [e["mediaType"] for e in entries] == [L.DOCKER_MANIFEST, L.OCI_INDEX]
        assert entries[1]["annotations"][L.COMPAT_FOR] == desc["digest"]
    (img,) = Layout(tmp_path).images("kubernetes", "last-component")
    assert img.media_type == L.DOCKER_MANIFEST and img.original_ref == "coredns/coredns:1.1.3"
    assert img.digest == desc["digest"] and img.manifests == [(desc["digest"], L.DOCKER_MANIFEST)]
    assert seeded_refs(tmp_path, "h:8443", "kubernetes") == {
        "coredns/coredns:1.1.3": "h:8443/kubernetes/coredns:1.1.3"
    }


def test_a_bad_reference_in_index_json_is_an_error_not_a_traceback(tmp_path):
    w = L.LayoutWriter(tmp_path)
    w.tag(w.image([w.layer({"f": b"x"}, L.DOCKER_LAYER)], oci=False, label="x"), "example.com/UPPER/x:1")
    w.finish()
    with pytest.raises(Error) as err:
        seeded_refs(tmp_path, "h", "p")
    assert "not a valid image reference: 'example.com/UPPER/x:1'" in err.value.message
    assert err.value.context == "reading the bundle's images" and err.value.hint
