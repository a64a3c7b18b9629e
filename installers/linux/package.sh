#!/usr/bin/env bash
# Wrap the PyInstaller one-folder bundle (dist/minmo-assistant/, from `make dist`) for Linux:
#   dist/minmo-assistant-<version>-linux-<arch>.tar.gz  the folder, the .desktop file, icons
#   dist/minmo-assistant_<version>_<debarch>.deb         /opt/minmo-assistant, a menu entry,
#                                                        /usr/bin/minmo-assistant
# Usage: installers/linux/package.sh [dist-folder]   (default: dist)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
dist="$(cd "${1:-$root/dist}" && pwd)"
bundle="$dist/minmo-assistant"
[ -x "$bundle/minmo-assistant" ] || { echo "package.sh: no bundle in $bundle (run make dist)" >&2; exit 1; }
version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/pyproject.toml" | head -1)"
arch="$(uname -m)"
debarch="$(dpkg --print-architecture 2>/dev/null || echo amd64)"
icons="$root/assets/icon"

# the tarball: extract anywhere, run ./minmo-assistant/minmo-assistant
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
cp -a "$bundle" "$stage/minmo-assistant"
cp "$here/minmo-assistant.desktop" "$stage/minmo-assistant/"
cp "$icons/minmo-256.png" "$stage/minmo-assistant/minmo-assistant.png"
cp "$here/INSTALL.txt" "$stage/minmo-assistant/"
tarball="$dist/minmo-assistant-$version-linux-$arch.tar.gz"
tar -C "$stage" -czf "$tarball" minmo-assistant
echo "wrote $tarball ($(du -h "$tarball" | cut -f1))"

# the .deb
if command -v dpkg-deb >/dev/null; then
    deb="$stage/deb"
    mkdir -p "$deb/DEBIAN" "$deb/opt" "$deb/usr/bin" "$deb/usr/share/applications"
    cp -a "$bundle" "$deb/opt/minmo-assistant"
    ln -s /opt/minmo-assistant/minmo-assistant "$deb/usr/bin/minmo-assistant"
    cp "$here/minmo-assistant.desktop" "$deb/usr/share/applications/"
    for size in 16 32 48 64 128 256 512; do
        mkdir -p "$deb/usr/share/icons/hicolor/${size}x${size}/apps"
        cp "$icons/minmo-$size.png" "$deb/usr/share/icons/hicolor/${size}x${size}/apps/minmo-assistant.png"
    done
    installed_kb="$(du -sk "$deb" | cut -f1)"
    sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$debarch/" -e "s/@SIZE@/$installed_kb/" \
        "$here/control.in" > "$deb/DEBIAN/control"
    out="$dist/minmo-assistant_${version}_$debarch.deb"
    dpkg-deb --root-owner-group -Zxz --build "$deb" "$out" >/dev/null
    echo "wrote $out ($(du -h "$out" | cut -f1))"
else
    echo "no dpkg-deb here: the .deb is skipped (the tarball is enough)"
fi
