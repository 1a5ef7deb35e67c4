#!/usr/bin/env bash
# Install genstudio's desktop entry and icons for the current user, so it appears in the
# desktop's application menu. Files go under $XDG_DATA_HOME (default ~/.local/share):
#   applications/genstudio.desktop, icons/hicolor/{scalable,NxN}/apps/genstudio.{svg,png}
#
#   packaging/install-desktop-entry.sh [EXECUTABLE]
#
# EXECUTABLE is what the menu entry runs: a built bundle (build/bundle/dist/genstudio/genstudio),
# the set-up's .venv/bin/genstudio, or by default `genstudio` from PATH. --uninstall removes
# the files again.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
data="${XDG_DATA_HOME:-$HOME/.local/share}"
apps="$data/applications"
icons="$data/icons/hicolor"

if [[ "${1:-}" == "--uninstall" ]]; then
    rm -f "$apps/genstudio.desktop" "$icons/scalable/apps/genstudio.svg" "$icons"/*/apps/genstudio.png
    echo "removed genstudio's desktop entry and icons from $data"
    exit 0
fi

exe="${1:-genstudio}"
if [[ "$exe" == */* ]]; then
    [[ -x "$exe" ]] || { echo "error: $exe is not an executable file" >&2; exit 1; }
    exe="$(cd "$(dirname "$exe")" && pwd)/$(basename "$exe")"
fi
# The Exec key's quoting rules: a path with spaces must be quoted.
[[ "$exe" == *" "* ]] && exec_value="\"$exe\"" || exec_value="$exe"

mkdir -p "$apps" "$icons/scalable/apps"
sed "s|^Exec=.*|Exec=$exec_value|" "$here/packaging/genstudio.desktop" > "$apps/genstudio.desktop"
cp "$here/assets/genstudio.svg" "$icons/scalable/apps/genstudio.svg"
for png in "$here"/assets/icons/genstudio-*.png; do
    size="$(basename "$png" .png)"; size="${size#genstudio-}"
    mkdir -p "$icons/${size}x${size}/apps"
    cp "$png" "$icons/${size}x${size}/apps/genstudio.png"
done
command -v update-desktop-database >/dev/null 2>&1 && update-desktop-database -q "$apps" || true
echo "installed $apps/genstudio.desktop (Exec=$exec_value) and icons under $icons"
