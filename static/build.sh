#!/bin/sh
# Build the installer CLI as ONE statically linked executable: PyInstaller --onedir, Debian's glibc added to it,
# packed behind static/launcher.c (linked statically) by static/pack.py.
#
#   static/build.sh OUT                 build into OUT (e.g. dist/installer-linux-amd64)
#   static/build.sh --sources-digest    print the cache key of the current sources and exit
#
# Built with Debian's /usr/bin/python3 (the glibc it links against is the one the payload carries) in a build
# venv holding exactly static/requirements-build.txt (--require-hashes). Needs apt python3-venv, binutils,
# libpython3.X, gcc, libc6-dev, libssl-dev and zlib1g-dev (`make static` installs what is missing).
# Environment: STATIC_PYTHON (default /usr/bin/python3), STATIC_WORK (venvs and scratch, default
# ${K8S_OFFLINE_CACHE:-~/.cache/k8s-offline}/static/work, the bundler's cache; created 0700 and refused when
# another user owns it or group/others may write it: its venv builds what is signed into the bundle),
# K8S_OFFLINE_COMMIT (commit to embed when there is no git).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
python=${STATIC_PYTHON:-/usr/bin/python3}
work=${STATIC_WORK:-${K8S_OFFLINE_CACHE:-${HOME:?}/.cache/k8s-offline}/static/work}
name=installer-linux-amd64

die() {
  echo "static/build.sh: error: $*" >&2
  exit 2
}

# The cache key: every source file that goes into the executable, the pinned build requirements (in
# static/) and the build Python. bundler/static.py computes the same digest (a test checks they agree).
sources_digest() {
  (
    cd "$root"
    { find contract installer static -type f ! -path '*/__pycache__/*' ! -name '*.pyc' -print; echo pyproject.toml; } \
      | LC_ALL=C sort | while IFS= read -r f; do sha256sum -- "$f"; done
    echo "python $("$python" -c 'import sys; print(sys.version.split()[0])')"
  ) | sha256sum | cut -d' ' -f1
}

if [ "${1:-}" = "--sources-digest" ]; then
  sources_digest
  exit 0
fi
[ $# -eq 1 ] || die "usage: static/build.sh OUT | --sources-digest"
out=$1
case "$out" in /*) ;; *) out="$PWD/$out" ;; esac

# The work directory holds the venv whose PyInstaller builds the executable: it must be ours alone (the same
# rule as bundler.cache.private_dir). A predictable shared path (/var/tmp/...) would let another user plant it.
private_dir() {
  if [ ! -e "$1" ] && [ ! -L "$1" ]; then
    mkdir -p "$(dirname "$1")" && mkdir -m 0700 "$1" 2>/dev/null || [ -d "$1" ] || die "cannot create $1"
  fi
  [ -d "$1" ] && [ ! -L "$1" ] || die "$1 is a symbolic link or not a directory: refusing to build in it"
  owner=$(stat -c %u "$1")
  [ "$owner" = "$(id -u)" ] || die "$1 is owned by uid $owner, not by this user (uid $(id -u)): refusing to build \
in it (remove it, or set STATIC_WORK to a directory of your own)"
  [ -z "$(find "$1" -maxdepth 0 -perm /022)" ] || die "$1 is group- or world-writable (mode $(stat -c %a "$1")): \
refusing to build in it (chmod 0700 it, or set STATIC_WORK to a directory of your own)"
}
case "$work" in /*) ;; *) work="$PWD/$work" ;; esac
private_dir "$work"

# Prerequisites, each with the apt package that provides it.
[ -x "$python" ] || die "$python not found (apt python3)"
"$python" -c 'import ensurepip, venv' 2>/dev/null || die "$python cannot make venvs (apt python3-venv)"
command -v objdump >/dev/null || die "objdump not found (apt binutils)"
command -v gcc >/dev/null || die "gcc not found (apt gcc)"
# gcc prints the bare name when it has no such file: the static libraries the launcher links
for lib in libc.a:libc6-dev libcrypto.a:libssl-dev libz.a:zlib1g-dev; do
  [ "$(gcc -print-file-name="${lib%%:*}")" != "${lib%%:*}" ] || die "${lib%%:*} not found (apt ${lib#*:})"
done
pyver=$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
libdir=$("$python" -c 'import sysconfig; print(sysconfig.get_config_var("LIBDIR"))')
[ -e "$libdir/libpython$pyver.so.1.0" ] || die "libpython$pyver.so.1.0 not found (apt libpython$pyver)"

reqs="$here/requirements-build.txt"
# A venv per requirements digest: a changed pin gets a fresh venv, an unchanged one is reused.
venv="$work/venv-$(cat "$reqs" "$python" | sha256sum | cut -c1-12)"
# Concurrent builds (make static, a bundler build, a test session) must not create the same venv twice.
exec 9>"$work/venv.lock"
if command -v flock >/dev/null; then flock 9; fi
if [ ! -f "$venv/.complete" ]; then
  echo "static: creating build venv $venv" >&2
  rm -rf "$venv"
  "$python" -m venv "$venv"
  if ! "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps --only-binary=:all: \
      --require-hashes -r "$reqs" >"$work/pip.log" 2>&1; then
    tail -n 20 "$work/pip.log" >&2
    die "pip could not install static/requirements-build.txt (log: $work/pip.log)"
  fi
  touch "$venv/.complete"
fi
exec 9>&-
py="$venv/bin/python"

stage=$(mktemp -d "$work/build.XXXXXX")
trap 'rm -rf "$stage"' EXIT INT TERM

# A private copy of the sources, so the generated _build_info.py never touches the work tree.
mkdir -p "$stage/src"
(cd "$root" && tar -cf - --exclude=__pycache__ --exclude='*.pyc' contract installer) | tar -xf - -C "$stage/src"
version=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$root/contract/version.py")
[ -n "$version" ] || die "no __version__ in contract/version.py"
commit=${K8S_OFFLINE_COMMIT:-$(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)}
dirty=False
if [ -z "${K8S_OFFLINE_COMMIT:-}" ] && [ "$commit" != unknown ] \
    && [ -n "$(git -C "$root" status --porcelain -- contract installer pyproject.toml static 2>/dev/null)" ]; then
  dirty=True
fi
digest=$(sources_digest)
suffix=""
[ "$dirty" = True ] && suffix="-dirty"
cat > "$stage/src/installer/_build_info.py" <<EOF
"""What this frozen build was made from (written by static/build.sh)."""

VERSION = "$version"
COMMIT = "$commit"
DIRTY = $dirty
SOURCES_SHA256 = "$digest"
VERSION_TEXT = "$version (commit $commit$suffix, sources $(echo "$digest" | cut -c1-12), static)"
EOF

echo "static: PyInstaller --onedir ($version, commit $commit$suffix)" >&2
# zstandard's cffi backend (12 MB) is never imported: zstandard uses its C extension (backend_c) by default.
# Same bytes for the same inputs where PyInstaller allows it (fixed hash seed and timestamps).
SOURCE_DATE_EPOCH=315532800 PYTHONHASHSEED=0 "$py" -m PyInstaller --noconfirm --onedir --log-level WARN \
  --name "$name" --distpath "$stage/dist" --workpath "$stage/work" --specpath "$stage" \
  --paths "$stage/src" \
  --collect-submodules installer \
  --collect-submodules contract \
  --add-data "$stage/src/installer/templates:installer/templates" \
  --collect-submodules rich._unicode_data \
  --runtime-hook "$here/rthook_env.py" \
  --exclude-module tkinter --exclude-module bundler --exclude-module tests \
  --exclude-module zstandard.backend_cffi --exclude-module zstandard._cffi \
  "$here/installer_main.py" >&2

echo "static: launcher (gcc -static) and payload" >&2
gcc -static -s -O2 -Wall -Wextra -Werror -o "$stage/launcher" "$here/launcher.c" -lcrypto -lz >&2
"$py" "$here/pack.py" "$stage/launcher" "$stage/dist/$name" "$stage/$name" || die "static/pack.py failed"
# Fails here, not on site, if the result does not start (its cache: a directory of the stage, not ~/.cache).
mkdir -m 0700 "$stage/run-cache"
K8S_OFFLINE_INSTALLER_CACHE="$stage/run-cache" "$stage/$name" --version >/dev/null \
  || die "the built executable does not run"
mkdir -p "$(dirname "$out")"
chmod 0755 "$stage/$name"
mv -f "$stage/$name" "$out.tmp.$$"
mv -f "$out.tmp.$$" "$out"
echo "static: wrote $out ($(wc -c <"$out") bytes)" >&2
