#!/bin/sh
# check.sh CONFIG FRAGMENT...
# Fails (exit 1), listing them, if any option a fragment sets (`CONFIG_X=y`
# or `CONFIG_X=value`) is not set to exactly that in CONFIG, or any option a
# fragment turns off (`# CONFIG_X is not set`) ended up on. olddefconfig
# silently drops options whose dependencies are unmet; this catches it.
set -eu
[ $# -ge 2 ] || { echo "usage: $0 CONFIG FRAGMENT..." >&2; exit 2; }
config=$1; shift
bad=0
for frag in "$@"; do
    while IFS= read -r line; do
        case $line in
        CONFIG_*=*)
            name=${line%%=*}
            if ! grep -qxF -- "$line" "$config"; then
                got=$(grep -E "^(# )?$name[= ]" "$config" || true)
                echo "dropped: $line (${frag##*/}); .config has: ${got:-nothing}" >&2
                bad=$((bad + 1))
            fi ;;
        "# CONFIG_"*" is not set")
            name=${line#\# }; name=${name%% *}
            if grep -qE "^$name=" "$config"; then
                echo "unwanted: $(grep -E "^$name=" "$config") (${frag##*/} wants it off)" >&2
                bad=$((bad + 1))
            fi ;;
        esac
    done < "$frag"
done
if [ "$bad" -ne 0 ]; then
    echo "check.sh: $bad option(s) did not survive olddefconfig" >&2
    exit 1
fi
