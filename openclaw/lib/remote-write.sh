# The shell functions of an upload's writes, one file for both hosts
# (host/src/put.rs compiles it in; openclaw/lib/remote-transfer.js reads it).
# Lines starting with `#` are left out; the rest, joined by spaces, follow
# the prelude, which sets `$r` (the resolved root, no trailing `/`) and `$m`
# (the command's marker). `: NAME;` are no-ops where a test build puts its
# shell hooks.
#
# w DIR: enter `$r`, then each `/`-separated component of DIR, making a
# missing one; after each step the real working directory (getcwd, through
# `cs_pwd` of remote-root.sh: bash's own `pwd -P` and `$PWD` go by the
# path's text, which a racing swap can make lie) must be inside
# `$r` (else status 4, after `$m outside PATH`, `$m via COMPONENTS` (the
# part of DIR that leads out) and `$m root ROOT` on stderr, newlines
# replaced).
# Status 3: a component cannot be entered; 6: one is not a directory and
# cannot be made one. The root itself must still be `$r` (a job could swap
# it since). On failure the working directory is anywhere: run nothing
# after a failed `w`.
w() { cd -P -- "$r/" 2>/dev/null || return 3; q=$(cs_pwd; printf x); q=${q%?x}; [ "${q%/}" = "$r" ] || { printf '%s outside %s\n%s root %s\n' "$m" "$(printf '%s' "$q" | tr '\n' '?')" "$m" "$(printf '%s' "$r" | tr '\n' '?')" >&2; return 4; }; v=; [ -n "$1" ] || return 0; o=$IFS; IFS=/; set -f; set -- $1; IFS=$o; set +f; for c do [ -n "$c" ] || continue; v=${v:+$v/}$c; if [ ! -e "./$c" ] && [ ! -L "./$c" ]; then mkdir -- "./$c" 2>/dev/null; fi; [ -d "./$c" ] || return 6; cd -P -- "./$c" 2>/dev/null || return 3; q=$(cs_pwd; printf x); q=${q%?x}; case "$q/" in "$r"/*) ;; *) printf '%s outside %s\n' "$m" "$(printf '%s' "$q" | tr '\n' '?')" >&2; printf '%s via %s\n' "$m" "$(printf '%s' "$v" | tr '\n' '?')" >&2; printf '%s root %s\n' "$m" "$(printf '%s' "$r" | tr '\n' '?')" >&2; return 4;; esac; done; };
# p DIR NAME OFFSET MODE: write stdin to DIR/NAME (DIR relative to `$r`,
# entered by `w`) from byte OFFSET on (0: a new file), then set MODE (octal;
# `u` first: less the umask) on the descriptor, and print `$m wrote SIZE`.
# Status 5: the name is a symbolic link; 10: a directory; 11: another kind
# of file; 12: the new file could not be made (something appeared at the
# name, or no permission: dd says which); 13: the opened file is not the
# one at the name, has other links, or is not OFFSET bytes long; 14:
# writing failed; 15: the mode could not be set. Anything else is w's.
p() { ( w "$1" || exit $?; : after-walk; [ ! -L "./$2" ] || exit 5; if [ -e "./$2" ] && [ ! -f "./$2" ]; then [ ! -d "./$2" ] || exit 10; exit 11; fi; if [ "$3" = 0 ]; then rm -f -- "./$2" 2>/dev/null; dd of="./$2" conv=excl oflag=nofollow count=0 status=none </dev/null || exit 12; fi; : after-create; { s=$(stat -c %d:%i:%h:%s -- "./$2") && t=$(stat -L -c %d:%i:%h:%s /proc/self/fd/4) && [ "$s" = "$t" ] && [ -f /proc/self/fd/4 ] || exit 13; case $t in *:*:1:"$3") ;; *) exit 13;; esac; : after-check; dd of=/proc/self/fd/4 conv=notrunc oflag=seek_bytes seek="$3" bs=262144 status=none || exit 14; case $4 in u*) k=$(printf %o $(( 0${4#u} & ~0$(umask) )));; *) k=$4;; esac; chmod -- "$k" /proc/self/fd/4 || exit 15; printf '%s wrote %s\n' "$m" "$(stat -L -c %s /proc/self/fd/4)" >&2; exit 0; } 4<"./$2" || exit 13; ); };
# f NAME...: no NAME in the working directory is a link (status 5), a
# directory (10) or another kind of file but a regular one (11); the name
# goes first to stderr (`$m name NAME`, newlines replaced).
f() { for n do if [ -L "./$n" ]; then s=5; elif [ -d "./$n" ]; then s=10; elif [ -e "./$n" ] && [ ! -f "./$n" ]; then s=11; else continue; fi; printf '%s name %s\n' "$m" "$(printf '%s' "$n" | tr '\n' '?')" >&2; exit $s; done; };
