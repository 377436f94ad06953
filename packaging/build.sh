#!/usr/bin/env bash
# Builds ftagent's packages for Debian 12 and AlmaLinux 9 from this tree, as root or not:
#
#   bash packaging/build.sh                  release build, then
#                                            target/packages/ftagent_VERSION_amd64.deb and
#                                            target/packages/ftagent-VERSION-1.x86_64.rpm
#   bash packaging/build.sh --debug          the same from the debug build (faster; the tests)
#   bash packaging/build.sh --binary PATH    package an ftagent already built
#   bash packaging/build.sh --out DIR        write the packages there instead
#
# Both hold the stripped binary (/usr/sbin/ftagent), the systemd unit as it is in systemd/,
# the commented /etc/ftagent/ftagent.toml (a conffile / %config(noreplace)), the man pages
# ftagent(8) and ftagent.toml(5), bash and zsh completions (these four and the configuration
# written by the binary itself: `ftagent package-files DIR`), the licence and the docs. The
# maintainer scripts are packaging/debian/ and those in packaging/rpm/ftagent.spec.
# Needs dpkg-deb, rpmbuild (Debian's `rpm` package), strip and gzip; tests/deps.sh --test
# installs them.
set -euo pipefail
umask 022

profile=release
binary=""
out=""
while [ "$#" -gt 0 ]; do
  case "$1" in
    --debug) profile=debug ;;
    --binary) binary=$(realpath "${2:?--binary needs a path}"); shift ;;
    --out) out=$(realpath -m "${2:?--out needs a directory}"); shift ;;
    *) echo "usage: bash packaging/build.sh [--debug] [--binary PATH] [--out DIR]" >&2; exit 2 ;;
  esac
  shift
done
cd "$(dirname "$0")/.."
out=${out:-$PWD/target/packages}

version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
if [ -z "$binary" ]; then
  if [ "$profile" = release ]; then cargo build --locked --release; else cargo build --locked; fi
  binary=target/$profile/ftagent
fi

work=$out/work
rm -rf "$work"
mkdir -p "$work" "$out"
# Release packages are compressed hard; the debug one, which the tests build, fast.
if [ "$profile" = release ]; then
  deb_compress=(-Zxz) rpm_payload=w19.zstdio
else
  deb_compress=(-Zgzip -z1) rpm_payload=w1.gzdio
fi

cp "$binary" "$work/ftagent"
strip --strip-all "$work/ftagent"
"$work/ftagent" package-files "$work/gen" >/dev/null
gzip -9n "$work/gen/ftagent.8" "$work/gen/ftagent.toml.5"

# stage ROOT UNIT_DIR ZSH_DIR: the files as they are installed.
stage() {
  local root=$1 unit_dir=$2 zsh_dir=$3
  install -D -m 0755 "$work/ftagent" "$root/usr/sbin/ftagent"
  install -D -m 0644 systemd/ftagent.service "$root$unit_dir/ftagent.service"
  install -d -m 0755 "$root/etc/ftagent"
  install -m 0600 "$work/gen/ftagent.toml" "$root/etc/ftagent/ftagent.toml"
  install -D -m 0644 "$work/gen/ftagent.8.gz" "$root/usr/share/man/man8/ftagent.8.gz"
  install -D -m 0644 "$work/gen/ftagent.toml.5.gz" "$root/usr/share/man/man5/ftagent.toml.5.gz"
  install -D -m 0644 "$work/gen/ftagent.bash" "$root/usr/share/bash-completion/completions/ftagent"
  install -D -m 0644 "$work/gen/_ftagent" "$root$zsh_dir/_ftagent"
  install -d -m 0755 "$root/usr/share/doc/ftagent"
  install -m 0644 README.md docs/configuration.md docs/design.md docs/bgp.md \
    "$root/usr/share/doc/ftagent/"
}

# --- Debian 12 -----------------------------------------------------------------------------
deb=$work/deb
stage "$deb" /lib/systemd/system /usr/share/zsh/vendor-completions
install -m 0644 packaging/debian/copyright "$deb/usr/share/doc/ftagent/copyright"
install -d -m 0755 "$deb/DEBIAN"
install -m 0755 packaging/debian/postinst packaging/debian/prerm packaging/debian/postrm "$deb/DEBIAN/"
echo /etc/ftagent/ftagent.toml >"$deb/DEBIAN/conffiles"
(cd "$deb" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) \
  >"$deb/DEBIAN/md5sums"
cat >"$deb/DEBIAN/control" <<EOF
Package: ftagent
Version: $version
Architecture: amd64
Maintainer: ftagent maintainers <ftagent@localhost>
Installed-Size: $(du -sk --exclude=DEBIAN "$deb" | cut -f1)
Depends: libc6 (>= 2.34), libgcc-s1
Suggests: iptables, ipset
Section: net
Priority: optional
Description: nftables-native DDoS detection and mitigation sidecar
 Detects volumetric and connection floods (UDP, SYN, amplification, HTTP,
 Slowloris, distributed) and drops them in its own nftables table,
 table inet ftagent, beside Fail2Ban, which keeps credential attacks. Every
 ban has a timeout. nft is not needed at run time; iptables and ipset only
 for the iptables compatibility chain.
 .
 The service is installed but not started: \`ftagent --setup --enable\` writes
 a configuration for this host and enables and starts it.
EOF
dpkg-deb --root-owner-group "${deb_compress[@]}" --build "$deb" "$out/ftagent_${version}_amd64.deb" >/dev/null

# --- AlmaLinux 9 ---------------------------------------------------------------------------
rpmroot=$work/rpmroot
stage "$rpmroot" /usr/lib/systemd/system /usr/share/zsh/site-functions
install -D -m 0644 LICENSE "$rpmroot/usr/share/licenses/ftagent/LICENSE"
sed "s/@VERSION@/$version/" packaging/rpm/ftagent.spec >"$work/ftagent.spec"
rpmbuild -bb --quiet \
  --define "_topdir $work/rpmbuild" \
  --define "_rpmdir $out" \
  --define "_rpmfilename %{NAME}-%{VERSION}-%{RELEASE}.%{ARCH}.rpm" \
  --define "_binary_payload $rpm_payload" \
  --define "stage $rpmroot" \
  "$work/ftagent.spec" >"$work/rpmbuild.log" 2>&1 || { cat "$work/rpmbuild.log" >&2; exit 1; }

rm -rf "$work"
ls -l "$out/ftagent_${version}_amd64.deb" "$out/ftagent-${version}-1.x86_64.rpm"
