#!/bin/sh
# Take the static installer out of a bundle, trusting nothing but the public key (see static/README.md).
#
#   sh bootstrap.sh BUNDLE PUBKEY [DEST]
#
# BUNDLE: k8s-<version>.bundle.tar.zst, the directory holding its parts (.part000, .part001, ...), or
# k8s-<version>.bootstrap.tar (no zstd needed; used automatically when zstd is missing and it lies beside
# the bundle). PUBKEY: bundle.pub (Ed25519, checks manifest.sig; needs OpenSSL >= 3.0 for `pkeyutl -rawin`)
# or bundle-p256.pub (ECDSA P-256, checks manifest.sig.p256 with `openssl dgst -sha256 -verify`: any openssl
# down to 1.0.2, as on CentOS 7). Given bundle.pub and an openssl without -rawin, bundle-p256.pub beside it
# is used instead. Steps: extract manifest.json, the signature and installer/installer-linux-amd64 into a
# private temporary directory; verify the signature with openssl; check the executable's size and sha256
# against its manifest entry; only then write DEST/installer-linux-amd64 (mode 0755).
# Needs: coreutils, GNU tar, openssl, and zstd unless given a bootstrap.tar. Exit 1 on any refusal.
set -eu

MEMBER=installer/installer-linux-amd64
OPENSSL=${OPENSSL:-openssl}

refuse() {
  echo "bootstrap: REFUSED: $*" >&2
  exit 1
}

[ $# -ge 2 ] && [ $# -le 3 ] || {
  echo "usage: sh bootstrap.sh BUNDLE|PARTS_DIR|BOOTSTRAP_TAR PUBKEY [DEST]" >&2
  exit 2
}
src=$1
pub=$2
dest=${3:-.}
[ -f "$pub" ] || refuse "public key $pub not found (copy bundle.pub, obtained out of band)"
[ -e "$src" ] || refuse "$src not found"

command -v "$OPENSSL" >/dev/null 2>&1 || refuse "openssl not found (set OPENSSL=/path/to/openssl)"

# Which signature to check. Ed25519 (manifest.sig) needs `pkeyutl -rawin` (OpenSSL >= 3.0); CentOS 7's own
# openssl 1.0.2 cannot check it. ECDSA P-256 (manifest.sig.p256) it can, with `dgst -sha256 -verify`.
# Only options openssl 1.0.2 has are used to tell the keys apart (1.0.2 cannot even load an Ed25519 key).
is_p256() {
  { "$OPENSSL" pkey -pubin -in "$1" -noout -text 2>/dev/null \
    || "$OPENSSL" ec -pubin -in "$1" -noout -text 2>/dev/null; } | grep -q 'ASN1 OID: prime256v1'
}
SIG=manifest.sig
if is_p256 "$pub"; then
  SIG=manifest.sig.p256
elif ! "$OPENSSL" pkeyutl -help 2>&1 | grep -q -- '-rawin'; then
  beside="$(dirname "$pub")/bundle-p256.pub"
  if [ -f "$beside" ] && is_p256 "$beside"; then
    echo "bootstrap: $("$OPENSSL" version 2>&1) cannot verify Ed25519 signatures (no pkeyutl -rawin); using" \
      "$beside beside $pub and the bundle's P-256 signature manifest.sig.p256 instead" >&2
    pub=$beside
    SIG=manifest.sig.p256
  else
    refuse "$("$OPENSSL" version 2>&1) cannot verify Ed25519 signatures (no pkeyutl -rawin; OpenSSL >= 3.0 has it):
  pass bundle-p256.pub (the P-256 key \`bundler keygen\` wrote beside bundle.pub) instead of $pub,
  or OPENSSL=/path/to/openssl3 (an OpenSSL >= 3.0 brought along)"
  fi
fi
MEMBERS="manifest.json manifest.sig"
[ "$SIG" = manifest.sig ] || MEMBERS="$MEMBERS $SIG"

work=$(mktemp -d "${TMPDIR:-/tmp}/k8s-bootstrap.XXXXXX")
trap 'rm -rf "$work"' EXIT
trap 'exit 1' HUP INT TERM

# The input files in stream order, one per line in $work/inputs.
if [ -d "$src" ]; then
  # parts are <bundle>.partNNN (3 or more digits): order by the number's length, then by the number
  find "$src" -maxdepth 1 -type f -name '*.part[0-9][0-9][0-9]*' | while IFS= read -r f; do
    n=${f##*.part}
    case "$n" in *[!0-9]*) continue ;; esac
    echo "${#n} $n $f"
  done | LC_ALL=C sort -k1,1n -k2,2 | cut -d' ' -f3- > "$work/inputs"
  if [ -s "$work/inputs" ]; then
    [ "$(sed 's/\.part[0-9]*$//' "$work/inputs" | LC_ALL=C sort -u | wc -l)" -eq 1 ] \
      || refuse "$src holds the parts of more than one bundle: give a directory with one bundle's parts"
    i=0
    while IFS= read -r f; do
      n=${f##*.part}
      [ "$(expr "$n" + 0)" -eq "$i" ] || refuse "part $(printf '%03d' "$i") of $(basename "${f%.part*}") is missing in $src"
      i=$((i + 1))
    done < "$work/inputs"
  else
    find "$src" -maxdepth 1 -type f -name '*.bundle.tar.zst' > "$work/inputs"
    [ "$(wc -l < "$work/inputs")" -eq 1 ] || refuse "$src holds no bundle file or parts (or several bundles)"
  fi
else
  printf '%s\n' "$src" > "$work/inputs"
fi
first=$(head -n 1 "$work/inputs")

# zstd stream or plain tar (bootstrap.tar)? Decide by the first bytes, not the name.
magic=$(od -An -tx1 -N4 "$first" | tr -d ' \n')
if [ "$magic" = "28b52ffd" ]; then
  if ! command -v zstd >/dev/null 2>&1; then
    base=$(basename "${first%.part[0-9]*}")
    boot="$(dirname "$first")/${base%.bundle.tar.zst}.bootstrap.tar"
    [ -f "$boot" ] || refuse "zstd is not installed and there is no $boot: copy the bootstrap.tar that
  bundler build wrote next to the bundle (it needs no zstd), or install zstd"
    echo "bootstrap: zstd is not installed; using $boot (verified against the same signed manifest)" >&2
    printf '%s\n' "$boot" > "$work/inputs"
    magic=plain
  fi
elif [ "$(od -An -c -j257 -N5 "$first" | tr -d ' \n')" = "ustar" ]; then
  magic=plain
else
  refuse "$first is neither a bundle (zstd) nor a bootstrap tar"
fi

stream() {
  while IFS= read -r f; do cat -- "$f"; done < "$work/inputs"
}

# One pass, stopping once the members were seen (manifest.json, manifest.sig and manifest.sig.p256 come
# first; a bundle without manifest.sig.p256 is read to its end before tar gives up on it).
# Nothing extracted here is trusted or run before the checks below.
mkdir "$work/x"
# (stderr of cat and zstd goes to a file: tar stopping early makes them report a broken pipe)
if [ "$magic" = plain ]; then
  stream 2>/dev/null | tar -x -f - -C "$work/x" --occurrence=1 --no-same-owner --no-same-permissions \
    $MEMBERS "$MEMBER" 2> "$work/tar.err" || true
else
  stream 2>/dev/null | zstd -dcq 2> "$work/zstd.err" \
    | tar -x -f - -C "$work/x" --occurrence=1 --no-same-owner --no-same-permissions \
    $MEMBERS "$MEMBER" 2> "$work/tar.err" || true
fi
touch "$work/zstd.err"
tar_errors() {
  grep -v -i 'broken pipe' "$work/zstd.err" | sed 's/^/  zstd: /' >&2 || true
  sed 's/^/  tar: /' "$work/tar.err" >&2
}
for m in manifest.json manifest.sig; do
  if [ ! -f "$work/x/$m" ] || [ -L "$work/x/$m" ]; then
    tar_errors
    refuse "$m is missing from $src: not a bundle, or damaged"
  fi
done
if [ "$SIG" = manifest.sig.p256 ] && { [ ! -f "$work/x/$SIG" ] || [ -L "$work/x/$SIG" ]; }; then
  refuse "$src carries no P-256 signature ($SIG; it was built without bundle-p256.key): check its Ed25519
  signature with bundle.pub and an OpenSSL >= 3.0 (OPENSSL=/path/to/openssl3)"
fi

# 1. The signature, over the exact manifest bytes.
if [ "$SIG" = manifest.sig.p256 ]; then
  if ! "$OPENSSL" dgst -sha256 -verify "$pub" -signature "$work/x/$SIG" "$work/x/manifest.json" \
      > "$work/openssl.out" 2>&1 || ! grep -q '^Verified OK' "$work/openssl.out"; then
    sed 's/^/  openssl: /' "$work/openssl.out" >&2
    refuse "$SIG: the P-256 signature of manifest.json does not verify with $pub: the bundle was altered or signed by another key"
  fi
elif ! "$OPENSSL" pkeyutl -verify -pubin -inkey "$pub" -rawin -in "$work/x/manifest.json" \
    -sigfile "$work/x/manifest.sig" > "$work/openssl.out" 2>&1 \
    || ! grep -q '^Signature Verified Successfully' "$work/openssl.out"; then
  sed 's/^/  openssl: /' "$work/openssl.out" >&2
  refuse "$SIG: the Ed25519 signature of manifest.json does not verify with $pub: the bundle was altered or signed by another key"
fi

# 2. The executable's entry in the (now trusted) canonical manifest: json.dumps(sort_keys=True, indent=1),
# so a file entry is the lines "mode", "path", "sha256", "size" at three spaces' indent, in this order.
entry=$(awk -v want="   \"path\": \"$MEMBER\"," '
  $0 == want { n++; getline sha; getline size; print sha; print size }
  END { if (n != 1) exit 1 }' "$work/x/manifest.json") \
  || refuse "the signed manifest lists no $MEMBER: the bundle was built without the static installer"
want_sha=$(echo "$entry" | sed -n '1s/^   "sha256": "\([0-9a-f]\{64\}\)",$/\1/p')
want_size=$(echo "$entry" | sed -n '2s/^   "size": \([0-9][0-9]*\)$/\1/p')
[ -n "$want_sha" ] && [ -n "$want_size" ] || refuse "cannot read the $MEMBER entry of manifest.json (format changed?)"

# 3. The executable against its entry.
exe="$work/x/$MEMBER"
if [ ! -f "$exe" ] || [ -L "$exe" ]; then
  tar_errors
  refuse "$MEMBER is missing from $src although the manifest lists it: the bundle is damaged"
fi
got_size=$(wc -c < "$exe" | tr -d ' ')
got_sha=$(sha256sum < "$exe" | cut -d' ' -f1)
[ "$got_size" = "$want_size" ] && [ "$got_sha" = "$want_sha" ] \
  || refuse "$MEMBER does not match the signed manifest (sha256 $got_sha, $got_size bytes; expected $want_sha, $want_size bytes): the bundle was altered or damaged"

mkdir -p "$dest"
cp "$exe" "$dest/.installer-linux-amd64.tmp.$$"
chmod 0755 "$dest/.installer-linux-amd64.tmp.$$"
mv -f "$dest/.installer-linux-amd64.tmp.$$" "$dest/installer-linux-amd64"
echo "bootstrap: OK: $dest/installer-linux-amd64 matches the signed manifest (sha256 $got_sha; $SIG verified with $pub)"
[ "$magic" = plain ] && src="<the bundle or its parts' directory>"
echo "bootstrap: next: $dest/installer-linux-amd64 verify $src --pub $pub"
