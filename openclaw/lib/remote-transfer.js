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

import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import * as err from "./host-error.js";
import { quoteWord } from "./grants.js";
import { ROOT_CHECK, rootCheck, rootLinkRefusal } from "./remote-confine.js";

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

/**
 * The shell functions `w` (walk to a directory), `p` (put a file) and `f`
 * (check names) of an upload's writes: one file for both hosts
 * (remote-write.sh, which documents them and their statuses; host/src/put.rs
 * compiles it in), its `#` lines left out, on one line.
 */
const WRITE_FUNCTIONS_FILE = readFileSync(new URL("./remote-write.sh", import.meta.url), "utf8");
export const WRITE_FUNCTIONS = WRITE_FUNCTIONS_FILE
  .split("\n")
  .filter((l) => l.trim() !== "" && !l.startsWith("#"))
  .join(" ");

/** Exit codes of a writing command that found remoteRoot through a replaceable link, or could not make or enter it. */
const ROOT_REFUSED = 97;
const ROOT_MISSING = 96;

/** `root` (sftp form) as an absolute shell word: `"$HOME"/...` below the home (confine.rs `root_word`). */
export function rootWord(root) {
  if (root.startsWith("/")) return quoteWord(root);
  if (root === "." || root === "") return '"$HOME"';
  return `"$HOME"/${quoteWord(root)}`;
}

/** A marker no login shell prints by chance, and no one knows before the command runs. */
export function marker() {
  return `cs-bytes-${randomBytes(16).toString("hex")}`;
}

/**
 * What every writing command starts with (put.rs `prelude`): a line break
 * on stdout and stderr (the command's own lines start a line whatever a
 * login shell printed), the root's check, `$r` (the root resolved in this
 * command, made where missing), `$m` (the marker) and the functions (`functions`: WRITE_FUNCTIONS, or a test's
 * copy with shell hooks at its `: NAME;` points).
 */
export function writePrelude(root, m, functions = WRITE_FUNCTIONS) {
  const word = rootWord(root);
  return `printf '\\n'; printf '\\n' >&2; LC_ALL=C; export LC_ALL; unset CDPATH; ${rootCheck(word, `exit ${ROOT_REFUSED}`)} r=$(cs_root_real ${word}); case $? in 0) ;; 2) exit ${ROOT_REFUSED};; *) exit ${ROOT_MISSING};; esac; r=\${r%?x}; r=\${r%/}; m=${m}; ${functions}`;
}


/** What a writing command said on stderr: its own lines (after the marker) and the tools' messages. */
function saidBy(stderr, m) {
  const said = { wrote: undefined, outside: undefined, via: undefined, root: undefined, name: undefined, other: [] };
  for (const line of Buffer.from(stderr ?? []).toString("utf8").split("\n")) {
    // Anywhere in the line: a process of the user's can write into stderr.
    const at = line.indexOf(`${m} `);
    const ours = at >= 0 ? line.slice(at + m.length + 1) : null;
    if (ours?.startsWith("wrote ")) said.wrote = /^[0-9]+$/.test(ours.slice(6).trim()) ? Number(ours.slice(6).trim()) : undefined;
    else if (ours?.startsWith("outside ")) said.outside = ours.slice(8);
    else if (ours?.startsWith("via ")) said.via = ours.slice(4);
    else if (ours?.startsWith("root ")) said.root = ours.slice(5);
    else if (ours?.startsWith("name ")) said.name = ours.slice(5);
    else if (line.trim() !== "") said.other.push(line);
  }
  said.rest = () => said.other.slice(-5).join("; ");
  return said;
}

const rootRefused = (root) => err.denied(rootLinkRefusal(shown(root)));
const rootMissing = (root, said) => err.remote(`remoteRoot ${shown(root)} cannot be made or entered on the cluster (${said.rest()})`);
/** `what` resolves outside the root (put.rs `outside`): named by the part of its path that leads out, when the command said it. */
function leadsOut(root, what, said) {
  const r = root.replace(/\/+$/, "");
  const named = said.via === undefined ? what : `remote path ${shown(r === "" ? `/${said.via}` : r === "." ? said.via : `${r}/${said.via}`)}`;
  return err.denied(
    `${named} resolves to ${said.outside ?? "another place"} on the cluster, outside remoteRoot ${shown(root)} (${said.root ?? "?"}): a symbolic link leads out of it; nothing was written there`,
  );
}

/** `remote` (sftp form, below `root`) as its directory relative to the root and its name. */
function splitBelow(root, remote) {
  const parts = belowRoot(root, remote);
  if (parts === null || parts.length === 0) {
    throw err.denied(`remote path ${shown(remote)} is not a file below remoteRoot ${shown(root)}`);
  }
  const name = parts.pop();
  return { dir: parts.join("/"), name };
}

/**
 * Make every directory of `dirs` (sftp-form paths below `root`, parents
 * first) inside the root, in one command on the cluster, each reached from
 * the root with `cd -P` and `/bin/pwd -P` checked at every step (put.rs
 * `make_dirs`): nothing is made through a link that leads out.
 */
export async function makeDirs(client, target, root, dirs, opts = {}) {
  const rels = dirs.map((d) => {
    const parts = belowRoot(root, d);
    if (parts === null) throw err.denied(`remote path ${shown(d)} is not below remoteRoot ${shown(root)}`);
    return parts.join("/");
  });
  if (rels.length === 0) return;
  const m = marker();
  const command = `${writePrelude(root, m, opts.writeFunctions)}${rels.map((r) => ` ( w ${quoteWord(r)} ) || exit $?;`).join("")}`;
  const out = await client.exec(target, command, { timeoutMs: (CHECK_BOUND_S + 30) * 1000, signal: opts.signal });
  const said = saidBy(out.stderr, m);
  switch (out.exitCode) {
    case 0: return;
    case ROOT_REFUSED: throw rootRefused(root);
    case ROOT_MISSING: throw rootMissing(root, said);
    case 4: throw leadsOut(root, "an upload's directory", said);
    case 6: throw err.remote(`an upload's directory below ${shown(root)} exists on the cluster and is not a directory, or could not be made (${said.rest()})`);
    default: throw err.remote(`making an upload's directories below ${shown(root)} failed on the cluster (exit ${out.exitCode}): ${said.rest()}`);
  }
}

/**
 * Write the open local file `fd` (`size` bytes, mode `mode`) to `remote`
 * (sftp form, below `root`) as a new file, by one command on the cluster
 * that decides where it writes in the write (put.rs `put`, the same shell
 * functions): it walks from the root to the file's directory (`cd -P`,
 * `/bin/pwd -P` checked per step), refuses a link or device at the name, makes
 * a new file exclusively (`dd conv=excl oflag=nofollow`, after unlinking
 * the name), checks its descriptor is the file at the name with one link,
 * and streams stdin to it through the descriptor. ssh reads `fd` itself.
 */
export async function putFile(client, target, root, remote, fd, { mode, size }, opts = {}) {
  const { dir, name } = splitBelow(root, remote);
  const modeWord = (mode & 0o111) !== 0 ? (mode & 0o777).toString(8) : `u${(mode & 0o777).toString(8)}`;
  const m = marker();
  const command = `${writePrelude(root, m, opts.writeFunctions)} p ${quoteWord(dir)} ${quoteWord(name)} 0 ${modeWord}`;
  const out = await client.exec(target, command, { stdinFd: fd, timeoutMs: opts.timeoutMs, signal: opts.signal });
  const said = saidBy(out.stderr, m);
  const at = shown(remote);
  const refused = (what) => err.denied(`remote path ${at} ${what}; nothing was written through it`);
  switch (out.exitCode) {
    case 0:
      if (said.wrote === size) return;
      throw err.remote(said.wrote === undefined
        ? `uploading ${at}: the cluster did not say what it wrote (${said.rest()})`
        : `uploading ${at}: the cluster holds ${said.wrote} bytes after ${size} were sent`);
    case ROOT_REFUSED: throw rootRefused(root);
    case ROOT_MISSING: throw rootMissing(root, said);
    case 3: throw err.remote(`uploading ${at}: a directory on its way cannot be entered on the cluster (${said.rest()})`);
    case 4: throw leadsOut(root, `the directory of ${at}`, said);
    case 6: throw err.remote(`uploading ${at}: a component of its directory exists on the cluster and is not a directory, or could not be made (${said.rest()})`);
    case 5: throw refused("is a symbolic link on the cluster; an upload never writes through one (remove it there, or upload elsewhere)");
    case 10: throw err.remote(`${at} exists on the cluster and is a directory`);
    case 11: throw refused("is not a regular file on the cluster (a device, FIFO or socket); an upload only replaces regular files");
    case 12:
      if (said.rest().includes("File exists")) {
        throw refused("had something appear at its name on the cluster while the upload was writing it (a link or file a job planted?)");
      }
      throw err.remote(`uploading ${at}: the cluster could not create it (${said.rest()})`);
    case 13: throw refused("changed on the cluster between the look and the open (a link or a hard link swapped in, or the file resized?)");
    case 14: throw err.remote(`uploading ${at}: writing it on the cluster failed (a full disk or quota?): ${said.rest()}`);
    case 15: throw err.remote(`uploading ${at}: its mode could not be set on the cluster: ${said.rest()}`);
    default:
      throw err.remote(`uploading ${at}: the command on the cluster failed (exit ${out.exitCode ?? out.exitSignal}): ${said.rest()}`);
  }
}
