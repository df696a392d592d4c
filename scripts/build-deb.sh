#!/usr/bin/env bash
# Builds the Debian package lazypull_<version>_<arch>.deb (dpkg-deb, no debian/ source tree):
#
#   /usr/bin/lazypull-snapshotter, /usr/bin/lazypull,
#   /usr/bin/lazypull-fuse-holder                             stripped (cmake --install --strip)
#   /lib/systemd/system/lazypull-snapshotter.service          enabled and started on install
#                                                             where systemd runs (as debhelper's
#                                                             dh_installsystemd does)
#   /lib/systemd/system/lazypull-fuse-holder.service          enabled and started, never
#                                                             restarted by an upgrade (it keeps
#                                                             the lazy mounts while the daemon
#                                                             restarts)
#   /etc/lazypull/config.toml                                 conffile (packaging/config.toml)
#   /usr/share/man/man8/lazypull-snapshotter.8.gz,
#   /usr/share/man/man1/lazypull.1.gz                         from the binaries' --help
#   /usr/share/doc/lazypull/{README.md,copyright,changelog.gz}
#
# Depends: is dpkg-shlibdeps' answer for the binaries (the Debian packages of every shared
# library they link, with the minimum versions their symbols need). Purging the package also
# removes the daemon's default state (/var/lib/lazypull, /run/lazypull) unless something is
# still mounted there.
#
# Usage (the binaries must exist or be buildable in the build dir):
#   scripts/build-deb.sh [--build-dir DIR] [--output DIR] [--no-build]
# --build-dir defaults to build-release (configured and built like scripts/build.sh --daemon
# when missing: Release, daemon and CLI only); --no-build packages what DIR/bin already holds
# (the ctest test uses its own build). --output defaults to DIR/deb. The .deb's path is the
# last line on stdout.
set -euo pipefail
cd "$(dirname "$0")/.."
src_dir=$(pwd)
build_dir="" output="" no_build=0
while [ $# -gt 0 ]; do
  case $1 in
    --build-dir) build_dir=$2; shift 2 ;;
    --output) output=$2; shift 2 ;;
    --no-build) no_build=1; shift ;;
    *) echo "build-deb: unknown argument $1" >&2; exit 2 ;;
  esac
done
log() { echo "build-deb: $*" >&2; }
[ -n "$build_dir" ] || build_dir=build-release
if [ "$no_build" = 0 ]; then
  BUILD_DIR=$build_dir bash scripts/build.sh --daemon >&2
fi
build_dir=$(realpath "$build_dir")
[ -n "$output" ] || output="$build_dir/deb"
mkdir -p "$output"
output=$(realpath "$output")
for b in lazypull-snapshotter lazypull lazypull-fuse-holder; do
  [ -x "$build_dir/bin/$b" ] || { echo "build-deb: $build_dir/bin/$b is not built" >&2; exit 1; }
done

version=$(sed -n 's/^project(lazypull VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)
arch=$(dpkg --print-architecture)
# Reproducible: every timestamp is the last commit's (dpkg-deb clamps to it).
SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || date +%s)
export SOURCE_DATE_EPOCH
date_rfc2822=$(LC_ALL=C date -u -d "@$SOURCE_DATE_EPOCH" -R)
date_man=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%d)

work="$build_dir/deb-work"
rm -rf "$work"
stage="$work/root"
mkdir -p "$stage"
umask 022

# 1. The install layout (binaries, unit, config, README), stripped.
DESTDIR="$stage" cmake --install "$build_dir" --prefix /usr --strip >&2
for b in lazypull-snapshotter lazypull lazypull-fuse-holder; do  # the compilers' version strings
  objcopy --remove-section=.comment "$stage/usr/bin/$b"
done
# Debian 12 keeps units in /lib/systemd/system (where debhelper puts them and lintian wants
# them); the unit names the binary and config paths only, so it moves as is.
mkdir -p "$stage/lib/systemd"
mv "$stage/usr/lib/systemd/system" "$stage/lib/systemd/system"
rmdir -p --ignore-fail-on-non-empty "$stage/usr/lib/systemd"
unit="$stage/lib/systemd/system/lazypull-snapshotter.service"
sed -i 's|^Documentation=file:/usr/share/doc/lazypull/README.md$|Documentation=man:lazypull-snapshotter(8) file:/usr/share/doc/lazypull/README.md|' "$unit"
grep -q '^ExecStart=/usr/bin/lazypull-fuse-holder --socket /var/lib/lazypull/fuse-holder.sock$' \
  "$stage/lib/systemd/system/lazypull-fuse-holder.service" ||
  { echo "build-deb: unexpected ExecStart in lazypull-fuse-holder.service" >&2; exit 1; }
grep -q '^ExecStart=/usr/bin/lazypull-snapshotter --config /etc/lazypull/config.toml$' "$unit" ||
  { echo "build-deb: unexpected ExecStart in $unit" >&2; exit 1; }

# 2. Manual pages from the binaries' own --help (so they never disagree with it).
roff_escape() { sed -e 's/\\/\\e/g' -e 's/-/\\-/g' -e 's/^\([.'"'"']\)/\\\&\1/'; }
# Help text whose sections are lines in capitals at column 0 (lazypull-snapshotter --help),
# each section kept as preformatted text.
help_sections_to_roff() {
  awk '/^[A-Z][A-Z ]*:?$/ { if (open) print ".fi"; sub(/:$/, ""); print ".SH " $0; print ".nf"; open = 1; next }
       { print }
       END { if (open) print ".fi" }'
}
man_dir="$stage/usr/share/man"
mkdir -p "$man_dir/man8" "$man_dir/man1"
{
  printf '.TH LAZYPULL\\-SNAPSHOTTER 8 "%s" "lazypull %s" "System Administration"\n' "$date_man" "$version"
  name_line=$("$build_dir/bin/lazypull-snapshotter" --help |
              awk '/^NAME$/ {n = 1; next} /^[A-Z]/ {n = 0} n {sub(/^ +/, ""); printf "%s%s", s, $0; s = " "}')
  echo ".SH NAME"
  printf '%s\n' "$name_line" | sed -e 's/ - / \\- /'
  "$build_dir/bin/lazypull-snapshotter" --help |
    awk '/^NAME$/ {skip = 1; next} /^[A-Z]/ {skip = 0} !skip' | roff_escape | help_sections_to_roff
} >"$work/lazypull-snapshotter.8"
{
  printf '.TH LAZYPULL 1 "%s" "lazypull %s" "User Commands"\n' "$date_man" "$version"
  echo ".SH NAME"
  "$build_dir/bin/lazypull" --help | head -n1 | sed 's/^lazypull: /lazypull \\- /'
  echo ".SH SYNOPSIS"
  echo ".B lazypull"
  echo "[\\fIOPTIONS\\fR] \\fISUBCOMMAND\\fR [\\fIARGS\\fR]"
  echo ".SH DESCRIPTION"
  echo ".nf"
  "$build_dir/bin/lazypull" --help | sed '1,/^Usage:/d' | roff_escape
  echo ".fi"
  echo ".SH SUBCOMMANDS"
  for sub in $("$build_dir/bin/lazypull" --help | awk '/^Subcommands:/ {s = 1; next} s && NF {print $1}'); do
    echo ".SS $sub"
    echo ".nf"
    "$build_dir/bin/lazypull" "$sub" --help | sed 's|^Usage: .*/lazypull |Usage: lazypull |' | roff_escape
    echo ".fi"
  done
  echo ".SH SEE ALSO"
  echo ".BR lazypull\\-snapshotter (8),"
  echo ".BR ctr (8)"
} >"$work/lazypull.1"
# Both must render without a single groff warning.
for page in "$work/lazypull-snapshotter.8" "$work/lazypull.1"; do
  warnings=$(LC_ALL=C.UTF-8 MANROFFSEQ='' MANWIDTH=80 man --warnings -E UTF-8 -l -Tutf8 -Z "$page" 2>&1 >/dev/null || true)
  [ -z "$warnings" ] || { echo "build-deb: $page: $warnings" >&2; exit 1; }
done
gzip -9n -c "$work/lazypull-snapshotter.8" >"$man_dir/man8/lazypull-snapshotter.8.gz"
gzip -9n -c "$work/lazypull.1" >"$man_dir/man1/lazypull.1.gz"

# 3. Documentation Debian requires: copyright and changelog (a native package: changelog.gz).
doc="$stage/usr/share/doc/lazypull"
install -m 0644 packaging/debian/copyright "$doc/copyright"
{
  printf 'lazypull (%s) unstable; urgency=medium\n\n' "$version"
  printf '  * Package built from commit %s.\n\n' "$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
  printf ' -- lazypull developers <dev@lazypull.invalid>  %s\n' "$date_rfc2822"
} | gzip -9n >"$doc/changelog.gz"

# 4. Control files. dpkg-shlibdeps reads debian/control from its working directory.
mkdir -p "$work/shlibdeps/debian" "$stage/DEBIAN"
printf 'Source: lazypull\n\nPackage: lazypull\nArchitecture: any\n' >"$work/shlibdeps/debian/control"
depends=$(cd "$work/shlibdeps" &&
          dpkg-shlibdeps -O "$stage/usr/bin/lazypull-snapshotter" "$stage/usr/bin/lazypull" \
            "$stage/usr/bin/lazypull-fuse-holder" |
          sed -n 's/^shlibs:Depends=//p')
[ -n "$depends" ] || { echo "build-deb: dpkg-shlibdeps found no dependencies" >&2; exit 1; }
installed_size=$(du -sk --apparent-size "$stage" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@DEPENDS@/$depends/" \
    -e "s/@INSTALLED_SIZE@/$installed_size/" packaging/debian/control.in >"$stage/DEBIAN/control"
install -m 0644 packaging/debian/conffiles "$stage/DEBIAN/conffiles"
for script in postinst prerm postrm; do
  install -m 0755 "packaging/debian/$script" "$stage/DEBIAN/$script"
done
(cd "$stage" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z |
  xargs -0 md5sum) >"$stage/DEBIAN/md5sums"
chmod 0644 "$stage/DEBIAN/md5sums"
find "$stage" -type d -exec chmod 0755 {} +

deb="$output/lazypull_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$stage" "$deb" >&2
rm -rf "$work"
log "$(dpkg-deb -f "$deb" Depends)"
echo "$deb"
