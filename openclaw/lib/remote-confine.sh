r=$1 p=$2 k=$3 cap=$4 n=$6
no() { printf 'cluster-slurm-confine: %s\n' "$1" >&2; exit 90; }
gone() { printf '%s: cannot open %s: No such file or directory\n' "$p" "$1" >&2; exit 1; }
inr() { h=$(if [ -x /bin/pwd ]; then /bin/pwd -P; else env pwd -P; fi; printf x); h=${h%?x}; case $h in "$r"|"$r"/*) ;; *) no outside;; esac; }
capped() { { s=$( { { "$@" 4>&- 5>&-; echo $? >&4; } | head -c "$cap" >&5 4>&-; } 4>&1 ); } 5>&1; [ "$s" = 141 ] && s=0; exit "${s:-1}"; }
case $5 in r) cd -P -- "$r" || exit 1;; esac
shift 6
inr
while [ "$n" -gt 1 ]; do
c=$1; shift; n=$((n - 1))
if [ ! -e "./$c" ] && [ ! -L "./$c" ]; then case $k in mkdirp) mkdir -- "./$c" || exit 1;; *) gone "$c";; esac; fi
cd -P -- "./$c" || exit 1
inr
done
b=
if [ "$n" = 1 ]; then b=$1; shift; fi
if [ -n "$b" ]; then
[ -L "./$b" ] && no symlink
case $k in mkdir*) ;; *) [ -e "./$b" ] || gone "$b";; esac
fi
case $k in
file)
[ -n "$b" ] && [ -f "./$b" ] || no notfile
exec 3< "./$b" || exit 1
[ "./$b" -ef /dev/fd/3 ] && [ ! -L "./$b" ] || no changed
capped "$p" "$@" <&3 3<&-;;
list)
if [ -n "$b" ] && [ -d "./$b" ]; then cd -P -- "./$b" || exit 1; inr; b=; fi
if [ -n "$b" ]; then capped "$p" "$@" -d -- "./$b"; else capped "$p" "$@" -- .; fi;;
entry) capped "$p" "$@" -- "./${b:-.}";;
mkdir*) exec mkdir "$@" -- "./${b:-.}";;
esac
exit 1
