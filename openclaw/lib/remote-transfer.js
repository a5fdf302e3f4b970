// Remote confinement of file transfers, the JavaScript twin of
// host/src/confine.rs: a remote path is judged by what it is on the cluster,
// not by how it reads. The grants check a path's text against remoteRoot; a
// job, though, can make any symlink, FIFO or file in its run directory
// (`ln -s /etc/passwd p`, `ln -s ~/.ssh s`, `ln -s / up`, `mkfifo f`), and
// sftp follows links: `get -R` follows the link it is given (file or
// directory; inside a tree OpenSSH 9.2 skips links, devices and FIFOs),
// `-mkdir` and `put` follow every link on the way, the last name included.
// So before sftp moves a byte, one command on the cluster (run by /bin/sh,
// bounded by coreutils `timeout` where present, its operands on stdin)
// decides:
//
// * download: the root and the source resolved physically (`cd -P`,
//   `realpath -e`); a source outside the resolved root is refused; the
//   resolved source must be a regular file or a directory (a FIFO, device
//   or socket is refused: nothing opens it), and the same command sums the
//   sizes of its regular files (`find -P`, which follows nothing and opens
//   no file) for host.maxDownloadBytes. sftp then reads the resolved path,
//   never the link.
// * upload: every directory written into is walked from the resolved root,
//   parents first: a real directory is taken (its parent was checked), a
//   symlink only when `cd -P` into it lands inside the root, a missing one
//   is made (`mkdir` of one name in a checked directory); every file name
//   written is looked at: a symlink, device, FIFO or socket there is
//   refused, never written through.
//   An existing regular file there is unlinked, so that `put` makes a new
//   file: `put` opens with O_TRUNC and would write into a hard link a
//   job planted at the name (the outside file it shares) otherwise.
//
// What the system sftp cannot give (as in confine.rs): there is no openat
// and no O_NOFOLLOW/O_EXCL over `put`/`get`, so a job that swaps a checked
// path for a symlink (or a file for a FIFO) in the instant between this
// command and sftp's open still wins that race; uploads re-check every
// batch of files right before it is sent, which narrows it. A file that
// grows after the check is bounded by the size watchdog of transfer.js
// (the cap still holds). Jobs that plant links beforehand, which is what an
// agent can arrange, are all caught.

import * as err from "./host-error.js";
import { quoteWord } from "./grants.js";
import { ROOT_CHECK, rootLinkRefusal } from "./remote-confine.js";

/** The default of `host.maxDownloadBytes`: 20 GiB per download call. */
export const DEFAULT_MAX_DOWNLOAD_BYTES = 20 * 2 ** 30;
/** Exit code and stderr mark of a refusal on the cluster. */
export const REFUSED_EXIT = 90;
export const MARK = "cluster-slurm-xfer: ";
/** Seconds a check may take on the cluster (a huge tree is walked by find). */
export const CHECK_BOUND_S = 120;

// Operands: stdin lines, in sftp form (relative = below the home, "." the
// home itself); paths with a line break never get here (sftpWord refuses them).
// On a refusal: exit 90, a MARK line on stderr, the paths it concerns on
// stdout, NUL-terminated (any byte but NUL survives).
export const DOWNLOAD_CHECK = `# cluster-slurm download check
${ROOT_CHECK}
IFS= read -r r || exit 1
IFS= read -r p || exit 1
case $r in /*) ;; .) r=$HOME;; *) r=$HOME/$r;; esac
case $p in /*) ;; .) p=$HOME;; *) p=$HOME/$p;; esac
no() { printf 'cluster-slurm-xfer: %s\\n' "$1" >&2; exit 90; }
cs_root_ok "$r" || no rootlink
cd -P -- "$r" || exit 1
r=$PWD
if command -v realpath >/dev/null 2>&1; then s=$(realpath -e -- "$p" && echo .); else s=$(readlink -e -- "$p" && echo .); fi || exit 1
s=\${s%?.}
printf '%s\\0%s\\0' "$r" "$s"
case $s in "$r"|"$r"/*) ;; *) no outside;; esac
if [ -L "$s" ]; then no changed
elif [ -d "$s" ]; then cd -P -- "$s" || exit 1; [ "$PWD" = "$s" ] || no changed; k=d; set -- .
elif [ -f "$s" ]; then k=f; set -- "$s" -maxdepth 0
else no notregular
fi
printf '%s\\n' "$k"
{ find -P "$@" -type f -printf '%s\\n' || echo failed; } | awk '/^[0-9]+$/ { t += $1; n++; next } { bad = 1 } END { if (bad) exit 3; printf "%.0f %d\\n", t, n }'`;

// Stdin: the root, then "d REL" (a directory, parents before children) and
// "f REL" (a file to be written) lines, REL relative to the root.
export const UPLOAD_CHECK = `# cluster-slurm upload check
${ROOT_CHECK}
IFS= read -r r || exit 1
case $r in /*) ;; .) r=$HOME;; *) r=$HOME/$r;; esac
no() { printf 'cluster-slurm-xfer: %s\\n' "$1" >&2; printf '%s\\0' "$r" "$2" "$3"; exit 90; }
cs_root_ok "$r" || no rootlink
{ cd -P -- "$r" 2>/dev/null || { mkdir -p -- "$r" && cd -P -- "$r"; }; } || exit 1
r=$PWD
while IFS= read -r l; do
n=\${l#??}
case $l in
"d "*)
if [ -L "./$n" ]; then
t=$(cd -P -- "./$n" 2>/dev/null && pwd -P && echo .) || no nodir "$n"
t=\${t%?.}
case $t in "$r"|"$r"/*) ;; *) no outside "$n" "$t";; esac
elif [ -d "./$n" ]; then :
elif [ -e "./$n" ]; then printf '%s/%s exists and is not a directory\\n' "$r" "$n" >&2; exit 1
else mkdir -- "./$n" 2>/dev/null || { [ -d "./$n" ] && [ ! -L "./$n" ]; } || { printf 'cannot make %s/%s\\n' "$r" "$n" >&2; exit 1; }
fi;;
"f "*)
if [ -L "./$n" ]; then no symlink "$n"
elif [ -d "./$n" ]; then printf '%s/%s exists and is a directory\\n' "$r" "$n" >&2; exit 1
elif [ -e "./$n" ] && [ ! -f "./$n" ]; then no notregular "$n"
elif [ -f "./$n" ]; then rm -f -- "./$n" || exit 1
fi;;
esac
done`;

/** The command line that runs `script` under /bin/sh, bounded in time. */
export function checkCommand(script) {
  return `if command -v timeout >/dev/null 2>&1; then set -- timeout -k 5 ${CHECK_BOUND_S}; else set --; fi; exec "$@" /bin/sh -c ${quoteWord(script)} cs`;
}

/** A path in sftp form as the agent wrote it (confine.rs `shown`): `~/...` below the home. */
export function shown(p) {
  if (p === "." || p === "") return "~";
  return p.startsWith("/") ? p : `~/${p}`;
}

/** `p` joined below `root` (both sftp form). */
const join = (root, rel) => (rel === "" ? root : root === "." ? rel : root.endsWith("/") ? `${root}${rel}` : `${root}/${rel}`);

/**
 * The components of `p` below `root` (both sftp form), or null when its
 * text is not below the root (confine.rs `below_root`).
 */
export function belowRoot(root, p) {
  const r = root.replace(/\/+$/, "");
  const path = p.replace(/\/+$/, "");
  let rest;
  if (r === ".") rest = path.startsWith("/") ? null : path === "." ? "" : path;
  else if (r === "") rest = path.startsWith("/") ? path.slice(1) : null;
  else if (path === r) rest = "";
  else rest = path.startsWith(`${r}/`) ? path.slice(r.length + 1) : null;
  if (rest === null) return null;
  return rest.split("/").filter((c) => c !== "");
}

const outside = (path, real, root, realRoot) => err.denied(
  `remote path ${shown(path)} resolves to ${real} on the cluster, outside remoteRoot ${shown(root)} (${realRoot}): a symbolic link leads out of it; nothing was read or written there`,
);

const strictUtf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * NUL-terminated fields of `bytes`, and what follows the last NUL. Decoded
 * strictly: a lossy decoding would turn a name that is not UTF-8 into
 * U+FFFD, another name a job can make (a link out), which sftp would then be
 * given instead of the one checked.
 */
function fields(bytes) {
  let text;
  try {
    text = strictUtf8.decode(Buffer.from(bytes ?? []));
  } catch {
    throw err.denied("a remote path resolves to a name that is not UTF-8 on the cluster; this host transfers UTF-8 names only (rename it there)");
  }
  const parts = text.split("\0");
  return { fields: parts.slice(0, -1), rest: parts[parts.length - 1] };
}

const reasonOf = (stderr) => {
  const line = Buffer.from(stderr ?? []).toString("utf8").split("\n").find((l) => l.startsWith(MARK));
  return line === undefined ? null : line.slice(MARK.length).trim();
};

const lastLines = (stderr) => Buffer.from(stderr ?? []).toString("utf8").trim().split("\n").slice(-3).join(" / ");

async function run(client, target, script, stdin, opts) {
  const timeoutMs = (CHECK_BOUND_S + 30) * 1000;
  return client.exec(target, checkCommand(script), { stdin, timeoutMs, signal: opts.signal });
}

/**
 * Resolve the download source `remote` (sftp form) on the cluster and hold
 * it to the resolved `root`: returns `{real, kind: "f"|"d", bytes, files}`,
 * `real` being the path sftp is to read. Refused (denied) when it resolves
 * outside the root, is no regular file or directory, or its regular files
 * sum over `maxBytes` (host.maxDownloadBytes): nothing has moved then.
 */
export async function checkDownload(client, target, root, remote, maxBytes, opts = {}) {
  const out = await run(client, target, DOWNLOAD_CHECK, `${root}\n${remote}\n`, opts);
  const { fields: f, rest } = fields(out.stdout);
  if (out.exitCode === REFUSED_EXIT) {
    const why = reasonOf(out.stderr);
    if (why === "rootlink") throw err.denied(rootLinkRefusal(shown(root)));
    if (why === "outside" && f.length >= 2) throw outside(remote, f[1], root, f[0]);
    if (why === "notregular") {
      throw err.denied(`remote path ${shown(remote)} is not a regular file or directory (a device, FIFO or socket): downloads read regular files only`);
    }
    if (why === "changed") {
      throw err.denied(`remote path ${shown(remote)} changed on the cluster while it was being checked (a symbolic link appeared); nothing was read`);
    }
  }
  if (out.exitCode === 124 || out.exitCode === 137) {
    throw err.timeout(`checking ${shown(remote)} on the cluster took more than ${CHECK_BOUND_S} s`);
  }
  const m = /^([fd])\n([0-9]+) ([0-9]+)\n$/.exec(rest);
  if (out.exitCode !== 0 || f.length !== 2 || m === null) {
    throw err.remote(`checking ${shown(remote)} on the cluster: ${lastLines(out.stderr) || `exit ${out.exitCode}`}`);
  }
  const bytes = Number(m[2]);
  const files = Number(m[3]);
  if (bytes > maxBytes) throw overCap(remote, bytes, files, maxBytes);
  return { real: f[1], kind: m[1], bytes, files };
}

/** The refusal of a download over host.maxDownloadBytes (confine.rs `check_download_size`). */
export function overCap(remote, bytes, files, maxBytes) {
  return err.denied(
    `download of ${shown(remote)} is ${bytes} bytes (${files} file(s)), over host.maxDownloadBytes (${maxBytes} bytes); nothing was transferred. Download a part of it, or the operator raises host.maxDownloadBytes`,
  );
}

/** Every directory of `rels` (component lists) and its ancestors, once, parents first. */
export function dirChain(rels) {
  const seen = new Set();
  const out = [];
  for (const parts of rels) {
    for (let i = 1; i <= parts.length; i++) {
      const at = parts.slice(0, i).join("/");
      if (!seen.has(at)) {
        seen.add(at);
        out.push(at);
      }
    }
  }
  return out;
}

/**
 * Check, on the cluster, that an upload writes only inside the resolved
 * `root`: the directories `dirs` and the parents of `files` (sftp-form
 * paths below the root) are reached inside it (made when missing), and no
 * name in `files` is a symlink or anything but a regular file. Refused
 * (denied) before sftp runs; nothing was written through a link then.
 */
export async function checkUpload(client, target, root, dirs, files, opts = {}) {
  const rel = (p) => {
    const parts = belowRoot(root, p);
    if (parts === null) throw err.denied(`remote path ${shown(p)} is not below remoteRoot ${shown(root)}`);
    return parts;
  };
  const fileParts = files.map(rel);
  for (const [i, parts] of fileParts.entries()) {
    if (parts.length === 0) throw err.remote(`${shown(files[i])} is remoteRoot itself, a directory`);
  }
  const chain = dirChain([...dirs.map(rel), ...fileParts.map((p) => p.slice(0, -1))]);
  const lines = [root, ...chain.map((d) => `d ${d}`), ...fileParts.map((p) => `f ${p.join("/")}`)];
  const out = await run(client, target, UPLOAD_CHECK, `${lines.join("\n")}\n`, opts);
  if (out.exitCode === 0) return;
  const { fields: f } = fields(out.stdout);
  const why = reasonOf(out.stderr);
  if (out.exitCode === REFUSED_EXIT && why === "rootlink") throw err.denied(rootLinkRefusal(shown(root)));
  if (out.exitCode === REFUSED_EXIT && why !== null && f.length >= 2) {
    const [realRoot, name, real] = f;
    const at = shown(join(root, name));
    switch (why) {
      case "outside":
        throw outside(join(root, name), real ?? "?", root, realRoot);
      case "nodir":
        throw err.denied(`remote path ${at} is a symbolic link to no directory on the cluster (resolved root ${realRoot}); nothing was written through it`);
      case "symlink":
        throw err.denied(`remote path ${at} is a symbolic link on the cluster; an upload never writes through one (remove it there, or upload elsewhere)`);
      case "notregular":
        throw err.denied(`remote path ${at} is not a regular file (a device, FIFO or socket); an upload only replaces regular files`);
      default:
        break;
    }
  }
  if (out.exitCode === 124 || out.exitCode === 137) {
    throw err.timeout(`checking the upload's directories below ${shown(root)} on the cluster took more than ${CHECK_BOUND_S} s`);
  }
  throw err.remote(`upload below remoteRoot ${shown(root)}: ${lastLines(out.stderr) || `exit ${out.exitCode}`}`);
}
