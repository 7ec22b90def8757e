#!/bin/sh
# check.sh CONFIG FRAGMENT...
# Fails (exit 1), listing them, if any option a fragment sets (`CONFIG_X=y`
# or `CONFIG_X=value`) is not set to exactly that in CONFIG, or any option a
# fragment turns off (`# CONFIG_X is not set`) ended up on. olddefconfig
# silently drops options whose dependencies are unmet; this catches it. As in
# merge_config.sh, a later fragment overrides an earlier one: only the last
# line naming an option is checked (guest.config turns PCI off, l1.config on).
set -eu
[ $# -ge 2 ] || { echo "usage: $0 CONFIG FRAGMENT..." >&2; exit 2; }
config=$1; shift
# "fragment<TAB>line" for the last setting of each option, in first-seen order
wanted=$(awk '
    /^CONFIG_[A-Za-z0-9_]+=/ { name = $0; sub(/=.*/, "", name) }
    /^# CONFIG_[A-Za-z0-9_]+ is not set$/ { name = $2 }
    name != "" {
        f = FILENAME; sub(/.*\//, "", f)
        if (!(name in last)) order[++n] = name
        last[name] = f "\t" $0
        name = ""
    }
    END { for (i = 1; i <= n; i++) print last[order[i]] }' "$@")
bad=0
tab=$(printf '\t')
while IFS=$tab read -r frag line; do
    case $line in
    CONFIG_*=*)
        name=${line%%=*}
        if ! grep -qxF -- "$line" "$config"; then
            got=$(grep -E "^(# )?$name[= ]" "$config" || true)
            echo "dropped: $line ($frag); .config has: ${got:-nothing}" >&2
            bad=$((bad + 1))
        fi ;;
    "# CONFIG_"*" is not set")
        name=${line#\# }; name=${name%% *}
        if grep -qE "^$name=" "$config"; then
            echo "unwanted: $(grep -E "^$name=" "$config") ($frag wants it off)" >&2
            bad=$((bad + 1))
        fi ;;
    esac
done <<END
$wanted
END
if [ "$bad" -ne 0 ]; then
    echo "check.sh: $bad option(s) did not survive olddefconfig" >&2
    exit 1
fi
