#!/bin/sh
# A recording fake of iptables, ip6tables and their -restore tools, for tgknock's tests.
# It keeps one file per chain under ../fw/v4 or ../fw/v6, applies restore input
# atomically (all lines or none), logs every call to ../fw/calls.log, and fails on
# demand: a file ../fw/fail-NAME holding "CODE MESSAGE" makes NAME fail that way;
# ../fw/fail-once-NAME does it once. A file ../fw/no-xt_time makes it a kernel without
# the time match: `-m time` fails, in `-C` probes and in restore input alike. A file
# ../fw/hold-NAME holds the next listing (`-S`) of NAME until the test lets it go.
me=$(basename "$0")
dir=$(cd "$(dirname "$0")/../fw" && pwd)
case "$me" in ip6*) fam=6 ;; *) fam=4 ;; esac
st="$dir/v$fam"
mkdir -p "$st"
[ -f "$st/INPUT" ] || : > "$st/INPUT"
log() { printf '%s\n' "$*" >> "$dir/calls.log"; }
# Written by rename: a test reading it never sees it half written by another call.
env > "$dir/env-$me.$$" && mv -f "$dir/env-$me.$$" "$dir/env-$me"

for f in "$dir/fail-once-$me" "$dir/fail-$me"; do
    if [ -f "$f" ]; then
        read -r code msg < "$f"
        case "$f" in *fail-once-*) rm -f "$f" ;; esac
        log "$me $* => exit $code ($msg)"
        case "$me" in *-restore) cat > /dev/null ;; esac
        echo "$msg" >&2
        exit "$code"
    fi
done

case "$me" in
*-restore)
    input=$(cat)
    log "$me $*"
    if [ -f "$dir/no-xt_time" ] && printf '%s\n' "$input" | grep -q -- ' -m time '; then
        echo "$me: line 3 failed (Couldn't load match \`time':No such file or directory)" >&2
        exit 1
    fi
    printf '%s\n' "$input" | sed 's/^/    /' >> "$dir/calls.log"
    tmp="$st.new.$$"
    rm -rf "$tmp"
    cp -r "$st" "$tmp"
    n=0
    if ! printf '%s\n' "$input" | while IFS= read -r line; do
        n=$((n + 1))
        case "$line" in
        '*filter' | COMMIT | '') ;;
        :INPUT* | :FORWARD* | :OUTPUT*) ;;
        :*)
            chain=${line#:}
            chain=${chain%% *}
            : > "$tmp/$chain"
            ;;
        "-A "*)
            rest=${line#-A }
            chain=${rest%% *}
            [ -f "$tmp/$chain" ] || { echo "$me: line $n failed: no chain $chain" >&2; exit 1; }
            printf '%s\n' "$line" >> "$tmp/$chain"
            ;;
        "-I "*)
            # -I CHAIN N RULE: RULE becomes the chain's Nth (N may be one past the end).
            rest=${line#-I }
            chain=${rest%% *}
            rest=${rest#* }
            at=${rest%% *}
            args=${rest#* }
            [ -f "$tmp/$chain" ] || { echo "$me: line $n failed: no chain $chain" >&2; exit 1; }
            awk -v at="$at" -v l="-A $chain $args" 'NR == at { print l; d = 1 } { print }
                END { if (!d && NR + 1 == at) { print l; d = 1 } exit d ? 0 : 1 }' \
                "$tmp/$chain" > "$tmp/$chain.x" || { echo "$me: line $n failed: index of insertion too big" >&2; exit 1; }
            mv "$tmp/$chain.x" "$tmp/$chain"
            ;;
        "-D "*)
            # -D CHAIN N deletes the Nth rule; -D CHAIN RULE the first rule that is RULE.
            rest=${line#-D }
            chain=${rest%% *}
            spec=${rest#* }
            [ -f "$tmp/$chain" ] || { echo "$me: line $n failed: no chain $chain" >&2; exit 1; }
            case $spec in
            *[!0-9]*) awk -v w="-A $chain $spec" 'BEGIN{d=0} { if (!d && $0 == w) { d=1; next } print } END { exit d ? 0 : 1 }' \
                "$tmp/$chain" > "$tmp/$chain.x" ;;
            *) awk -v at="$spec" 'NR == at { d = 1; next } { print } END { exit d ? 0 : 1 }' \
                "$tmp/$chain" > "$tmp/$chain.x" ;;
            esac || { echo "$me: line $n failed" >&2; exit 1; }
            mv "$tmp/$chain.x" "$tmp/$chain"
            ;;
        "-F "*) : > "$tmp/${line#-F }" ;;
        "-X "*) rm -f "$tmp/${line#-X }" ;;
        *)
            echo "$me: line $n: unsupported: $line" >&2
            exit 2
            ;;
        esac
    done; then
        rm -rf "$tmp"
        exit 1
    fi
    rm -rf "$st"
    mv "$tmp" "$st"
    ;;
*)
    log "$me $*"
    case " $* " in
    *" --version "*) echo "$me v1.8.9 (fake)" ;;
    *" -C "*)
        case " $* " in
        *" -m time "*)
            if [ -f "$dir/no-xt_time" ]; then
                echo "$me v1.8.9 (legacy): Couldn't load match \`time':No such file or directory" >&2
                exit 2
            fi
            ;;
        esac
        echo "$me: Bad rule (does a matching rule exist in that chain?)." >&2
        exit 1
        ;;
    *" -S "*)
        # ../fw/hold-NAME holds the first listing that finds it (it is renamed to
        # ../fw/held-NAME.PID, claimed by one caller only) until the test removes that.
        if mv "$dir/hold-$me" "$dir/held-$me.$$" 2> /dev/null; then
            while [ -f "$dir/held-$me.$$" ]; do sleep 0.02; done
        fi
        echo "-P INPUT ACCEPT"
        echo "-P FORWARD ACCEPT"
        echo "-P OUTPUT ACCEPT"
        for f in "$st"/*; do
            c=$(basename "$f")
            [ "$c" = INPUT ] || echo "-N $c"
        done
        cat "$st/INPUT"
        for f in "$st"/*; do
            c=$(basename "$f")
            [ "$c" = INPUT ] || cat "$f"
        done
        ;;
    *)
        echo "$me: unsupported call: $*" >&2
        exit 2
        ;;
    esac
    ;;
esac
