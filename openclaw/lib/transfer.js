// File transfer over the system `ssh` and `sftp`, with the semantics of the
// native host (host/src/sftp.rs): a file or a directory tree each way; in trees,
// only regular files and directories travel (symlinks are skipped, never
// followed). The local side never goes by a path that could have changed
// since it was checked (lib/local-fs.js):
// - uploads: the tree is planned from the opened workspace, one real
//   directory at a time; right before it is sent, each file is opened the
//   same way (O_NOFOLLOW) and must still be the inode the plan found (same
//   device and inode), and ssh reads that open file as its stdin, never
//   the path;
// - downloads: sftp writes into a private staging directory outside the
//   workspace; every file is then moved into the workspace through
//   directories walked again, per file, from the opened workspace (a
//   directory swapped for a symlink after the plan is refused, never
//   followed), renamed over its name (a planted link is replaced, never
//   written through). Where the staging directory is on another file
//   system, the file is copied into a partial file beside the destination
//   that is created exclusively (or reused only when it is the directory's
//   own single-link regular file) and then renamed. Names from
//   NEVER_WRITTEN (.git, .envrc, ...) are never written.
//
// The remote side is held to the profile's remoteRoot by what paths are on
// the cluster, not by their text (lib/remote-transfer.js, the twin of
// host/src/confine.rs): `opts.root` (the root in sftp form) is required.
// A download reads only the resolved source (a regular file or directory
// inside the resolved root), within `opts.maxDownloadBytes`
// (host.maxDownloadBytes). An upload's writes are decided on the cluster in
// the command that makes each (remote-transfer.js `putFile`, the shell
// functions host/src/put.rs runs too): the directory reached from the root
// with `cd -P`, a new file made exclusively, written through a descriptor
// checked to be the file at its name; `opts.writeFunctions` (tests only)
// replaces those functions by a copy with shell hooks between their steps.
//
// `opts.beforeOpen(shown)` is called right before each local open: a test
// hook, for swaps driven deterministically between plan and open. Only
// tests pass it; host.js builds the options itself, so neither the guest
// nor the agent can reach it.

import crypto from "node:crypto";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { show } from "./grants.js";
import * as err from "./host-error.js";
import * as lfs from "./local-fs.js";
import { DEFAULT_MAX_DOWNLOAD_BYTES, checkDownload, makeDirs, putFile, shown as remoteShown } from "./remote-transfer.js";

/**
 * One path as an sftp batch word: every character outside a safe set
 * backslash-escaped, which sftp's argument splitter and its glob both undo
 * (double quotes would keep the backslashes in front of glob characters).
 * A line break ends a batch command and cannot be escaped, so it is refused.
 */
export function sftpWord(p) {
  if (/[\n\r\0]/.test(p)) throw err.denied(`path ${show(p)} contains a line break or NUL`);
  // `u`: a character outside the BMP is one character, not two halves.
  return p.replace(/[^A-Za-z0-9_./=:,%@+-]/gu, "\\$&");
}

const remoteParent = (p) => {
  const i = p.lastIndexOf("/");
  return i <= 0 ? (i === 0 ? "/" : ".") : p.slice(0, i);
};

/** A local side: `rel`, a clean relative path without symlinks, below the directory `base`. */
const shownOf = (local, sub = "") => path.join(local.base, local.rel, sub);

/** Files of an upload whose directories are made by one command. */
const UPLOAD_BATCH = 128;

/**
 * Every regular file and directory below the open directory `dirFd`, in
 * name order, parents first, each with its device and inode; reached from
 * the handle, one real directory at a time.
 */
function walkTree(dirFd, rel = "") {
  const out = [];
  const names = fs.readdirSync(`/proc/self/fd/${dirFd}`).sort();
  for (const name of names) {
    const r = rel ? `${rel}/${name}` : name;
    const st = fs.lstatSync(lfs.at(dirFd, name));
    if (st.isDirectory()) {
      out.push({ rel: r, dir: true });
      out.push(...lfs.inDir(dirFd, [name], false, (sub) => walkTree(sub, r)));
    } else if (st.isFile()) {
      out.push({ rel: r, dir: false, size: st.size, dev: st.dev, ino: st.ino });
    }
  }
  return out;
}

/**
 * Open the planned file `rel` of the tree at `local` for sending: through
 * real directories, without following a final link, and only if it is
 * still the file the plan found.
 */
function openPlanned(baseFd, local, rel, planned, opts) {
  const shown = shownOf(local, rel);
  opts.beforeOpen?.(shown);
  const names = lfs.parts(path.join(local.rel, rel));
  const name = names.pop();
  let fd;
  let st;
  try {
    [fd, st] = lfs.inDir(baseFd, names, false, (dir) => lfs.openRegular(dir, name, false));
  } catch (e) {
    throw err.localIo(`${shown}: ${e.message} (it changed while it was being uploaded; nothing of it was sent)`);
  }
  if (st.dev !== planned.dev || st.ino !== planned.ino) {
    fs.closeSync(fd);
    throw err.localIo(`${shown} was replaced by another file while it was being uploaded; nothing of it was sent`);
  }
  return fd;
}

/**
 * Send `files` (each `{rel, planned, remote}`) into the directories `dirs`
 * (remote, sftp form): the directories are made first, inside the root
 * (remote-transfer.js `makeDirs`); then each file is opened right before
 * it goes and is written by one command on the cluster that decides where
 * it writes in the write (`putFile`), ssh reading the open file itself.
 */
async function sendBatch(client, target, baseFd, local, dirs, files, opts) {
  await makeDirs(client, target, opts.root, dirs, opts);
  for (const f of files) {
    const fd = openPlanned(baseFd, local, f.rel, f.planned, opts);
    try {
      const st = fs.fstatSync(fd);
      await putFile(client, target, opts.root, f.remote, fd, { mode: st.mode, size: st.size }, opts);
    } finally {
      fs.closeSync(fd);
    }
  }
}

/** The remote root (sftp form) a transfer is held to; a host bug without one. */
function rootOf(opts) {
  if (typeof opts.root !== "string" || opts.root === "") {
    throw new Error("transfer: opts.root (the profile's remoteRoot, sftp form) is required");
  }
  return opts.root;
}

/**
 * Upload `local` ({base, rel}: a file or a directory, its path already
 * resolved inside the workspace by the grants) to `remote`.
 */
export async function upload(client, target, local, remote, opts = {}) {
  rootOf(opts);
  let baseFd;
  try {
    baseFd = lfs.openBase(local.base);
  } catch (e) {
    throw err.asLocalIo(e, `opening ${local.base}`);
  }
  try {
    const names = lfs.parts(local.rel);
    const name = names.pop();
    if (name === undefined) throw err.localIo(`${local.base}: name a file or directory in it`);
    let st;
    try {
      st = lfs.inDir(baseFd, names, false, (dir) => fs.lstatSync(lfs.at(dir, name)));
    } catch (e) {
      throw err.localIo(`stat ${shownOf(local)}: ${e.message}`);
    }
    // Names with a line break are refused by this host (as for downloads).
    sftpWord(remote);
    if (st.isFile()) {
      const planned = { dev: st.dev, ino: st.ino };
      await sendBatch(client, target, baseFd, local, [remoteParent(remote)], [{ rel: "", planned, remote }], opts);
      return { files: 1, bytes: BigInt(st.size) };
    }
    if (!st.isDirectory()) throw err.localIo(`${shownOf(local)}: not a regular file or directory`);
    let entries;
    try {
      entries = lfs.inDir(baseFd, [...names, name], false, (dir) => walkTree(dir));
    } catch (e) {
      throw err.localIo(`reading ${shownOf(local)}: ${e.message}`);
    }
    // Each batch's directories (and, by the check, their parents) are
    // checked again right before its files go: a link a job made since
    // the last batch is met there.
    let dirs = [remote];
    let files = [];
    let count = 0;
    let bytes = 0;
    for (const e of entries) {
      const r = `${remote}/${e.rel}`;
      if (e.dir) dirs.push(r);
      else {
        files.push({ rel: e.rel, planned: e, remote: r });
        count += 1;
        bytes += e.size;
        if (files.length === UPLOAD_BATCH) {
          await sendBatch(client, target, baseFd, local, dirs, files, opts);
          dirs = [];
          files = [];
        }
      }
    }
    if (dirs.length || files.length) await sendBatch(client, target, baseFd, local, dirs, files, opts);
    return { files: count, bytes: BigInt(bytes) };
  } finally {
    fs.closeSync(baseFd);
  }
}

/** The longest file name most local file systems take. */
const NAME_MAX = 255;

/**
 * The partial file of a copy into `name`: `.NAME.cluster-slurm-part`, as
 * the native host names it; for a name too long to carry the decoration,
 * `.<SHA-256 of the name, 40 hex digits>.cluster-slurm-part` (sftp.rs
 * `partial_path`).
 */
export function partialName(name) {
  const plain = `.${name}.cluster-slurm-part`;
  if (Buffer.byteLength(plain) <= NAME_MAX) return plain;
  return `.${crypto.createHash("sha256").update(name).digest("hex").slice(0, 40)}.cluster-slurm-part`;
}

/**
 * The partial file `partial` of `dirFd`, open for writing: reused only when
 * it is this directory's own regular file with a single link (emptied
 * first), else removed and made afresh under an exclusive create, so a link
 * planted at its name is never written through.
 */
export function openPartial(dirFd, partial, shown) {
  for (let i = 0; i < 4; i++) {
    try {
      const [fd, st] = lfs.openRegular(dirFd, partial, true);
      if (st.nlink === 1) {
        fs.ftruncateSync(fd, 0);
        return fd;
      }
      // Another name shares this file (a planted hard link): let go of it, never write it.
      fs.closeSync(fd);
      fs.unlinkSync(lfs.at(dirFd, partial));
    } catch (e) {
      // A symlink, FIFO or anything else at the partial's name: not ours.
      if (e.code !== "ENOENT") fs.unlinkSync(lfs.at(dirFd, partial));
    }
    try {
      return lfs.createNew(dirFd, partial, 0o600);
    } catch (e) {
      // Someone made it meanwhile: look again.
      if (e.code !== "EEXIST") throw e;
    }
  }
  throw err.localIo(`${shown}: its partial file keeps being replaced; is another download to it in progress?`);
}

/** Copy the staged file into `name` of `dirFd` through its partial file. */
function copyIn(dirFd, name, staged, st, shown) {
  const partial = partialName(name);
  const out = openPartial(dirFd, partial, shown);
  try {
    const src = fs.openSync(staged, fs.constants.O_RDONLY | fs.constants.O_NOFOLLOW);
    try {
      const buf = Buffer.alloc(1 << 20);
      for (;;) {
        const n = fs.readSync(src, buf, 0, buf.length, null);
        if (n === 0) break;
        fs.writeSync(out, buf, 0, n);
      }
    } finally {
      fs.closeSync(src);
    }
    fs.fchmodSync(out, st.mode & 0o777);
    fs.futimesSync(out, st.atime, st.mtime);
    fs.fsyncSync(out);
    fs.closeSync(out);
    fs.renameSync(lfs.at(dirFd, partial), lfs.at(dirFd, name));
  } catch (e) {
    try {
      fs.closeSync(out);
    } catch {
      // Closed already.
    }
    fs.rmSync(lfs.at(dirFd, partial), { force: true });
    throw e;
  }
}

/**
 * Put the staged file `staged` at `name` of `dirFd`: renamed over it (a
 * rename replaces the directory entry: nothing is written through what was
 * there), or copied in across file systems. A symlink or directory there
 * is refused.
 */
export function placeFile(dirFd, name, staged, st, shown, { forceCopy = false } = {}) {
  let now = null;
  try {
    now = fs.lstatSync(lfs.at(dirFd, name));
  } catch (e) {
    if (e.code !== "ENOENT") throw e;
  }
  if (now?.isSymbolicLink()) throw err.denied(`${shown} is a symlink; refusing to write through it`);
  if (now?.isDirectory()) throw err.localIo(`${shown} exists and is a directory`);
  if (!forceCopy) {
    try {
      fs.renameSync(staged, lfs.at(dirFd, name));
      return;
    } catch (e) {
      if (e.code !== "EXDEV") throw e;
    }
  }
  copyIn(dirFd, name, staged, st, shown);
}

/**
 * Where downloads are staged: the host's state directory (as the native
 * host's records: `$XDG_STATE_HOME/cluster-slurm/downloads`, else under
 * ~/.local/state), outside the workspace so the agent cannot reach into it
 * while sftp writes; if that lies inside the workspace, a fresh private
 * directory in the system's temporary directory.
 */
function stagingDir(workspace, root) {
  if (root === undefined) {
    const state = process.env.XDG_STATE_HOME || path.join(process.env.HOME || os.homedir(), ".local/state");
    root = path.join(state, "cluster-slurm", "downloads");
    try {
      fs.mkdirSync(root, { recursive: true, mode: 0o700 });
      const real = fs.realpathSync(root);
      const ws = fs.realpathSync(workspace);
      if (real === ws || real.startsWith(`${ws}/`) || ws.startsWith(`${real}/`)) root = undefined;
    } catch {
      root = undefined;
    }
  }
  return fs.mkdtempSync(path.join(root ?? os.tmpdir(), "cluster-slurm-download-"));
}

/** Every regular file and directory of our own staging tree, parents first. */
function walkStaged(dir, rel = "") {
  const out = [];
  for (const name of fs.readdirSync(path.join(dir, rel)).sort()) {
    const r = rel ? `${rel}/${name}` : name;
    const st = fs.lstatSync(path.join(dir, r));
    if (st.isDirectory()) out.push({ rel: r, dir: true }, ...walkStaged(dir, r));
    else if (st.isFile()) out.push({ rel: r, dir: false, st });
  }
  return out;
}

/** Bytes of the regular files at or below `p` (our own staging; entries in flight may vanish). */
function stagedBytes(p) {
  let st;
  try {
    st = fs.lstatSync(p);
  } catch {
    return 0;
  }
  if (!st.isDirectory()) return st.isFile() ? st.size : 0;
  let names = [];
  try {
    names = fs.readdirSync(p);
  } catch {
    return 0;
  }
  return names.reduce((n, name) => n + stagedBytes(path.join(p, name)), 0);
}

/** How often the staging directory is measured while sftp writes it. */
const WATCH_MS = 250;

/**
 * Run the download batch while watching what lands: past `max` bytes
 * (a file that grew after the check) sftp is stopped and the download
 * refused, so the cap bounds the bytes read and the local disk used.
 */
async function fetchCapped(client, target, batch, landed, remote, source, max, sftpOpts) {
  const stop = new AbortController();
  const outer = sftpOpts.signal;
  const onAbort = () => stop.abort();
  if (outer?.aborted) stop.abort();
  outer?.addEventListener("abort", onAbort, { once: true });
  let over = null;
  const timer = setInterval(() => {
    const now = stagedBytes(landed);
    if (now > max && over === null) {
      over = now;
      stop.abort();
    }
  }, WATCH_MS);
  try {
    await client.sftp(target, batch, { ...sftpOpts, signal: stop.signal });
  } catch (e) {
    if (over !== null) {
      throw err.denied(`download of ${remoteShown(remote)} grew past ${over} bytes while it was transferred (${source.bytes} bytes in ${source.files} file(s) when checked), over host.maxDownloadBytes (${max} bytes); stopped, nothing was written to the workspace`);
    }
    throw e;
  } finally {
    clearInterval(timer);
    outer?.removeEventListener("abort", onAbort);
  }
}

/** A symlink met on the way is a refusal, as the grants would word it; the rest is local-io. */
function localFailure(e, what) {
  if (e?.code === "ELOOP") return err.denied(`${what}: ${e.message}`);
  return err.asLocalIo(e, what);
}

/**
 * Download `remote` (a file or a directory tree) to `local` ({base, rel}:
 * the destination path itself, checked by the grants).
 * `opts.root` (the profile's remoteRoot, sftp form) and
 * `opts.maxDownloadBytes` hold the source (remote-transfer.js);
 * `opts.stagingRoot` (tests) puts the staging directory elsewhere;
 * `opts.forceCopy` (tests) copies instead of renaming.
 */
export async function download(client, target, remote, local, opts = {}) {
  const shown = shownOf(local);
  const never = lfs.neverWritten(local.rel);
  if (never) throw err.denied(`local path ${show(local.rel)} is inside ${never}: the host never writes version-control metadata or direnv files (they run code); download elsewhere`);
  sftpWord(remote);
  const max = opts.maxDownloadBytes ?? DEFAULT_MAX_DOWNLOAD_BYTES;
  // Resolved and sized on the cluster before anything moves: a link out of
  // the root, a FIFO or device, or a tree over the cap is refused here.
  const source = await checkDownload(client, target, rootOf(opts), remote, max, opts);
  // Only the resolved path is read: sftp never gets the link.
  const word = sftpWord(source.real);
  let staging;
  try {
    staging = stagingDir(local.base, opts.stagingRoot);
  } catch (e) {
    throw err.asLocalIo(e, "creating a staging directory for a download");
  }
  const sftpOpts = { timeoutMs: opts.timeoutMs, signal: opts.signal };
  try {
    const landed = path.join(staging, "x");
    await fetchCapped(client, target, `get -R -p ${word} ${sftpWord(landed)}\n`, landed, remote, source, max, sftpOpts);
    let st;
    try {
      st = fs.lstatSync(landed);
    } catch (e) {
      throw err.remote(`sftp ${target}: ${remote} did not arrive (${e.message})`);
    }
    if (!st.isFile() && !st.isDirectory()) throw err.remote(`${remote}: not a regular file or directory`);
    const entries = st.isDirectory() ? walkStaged(landed) : [];
    // What arrived, against the cap once more (a file that grew after the
    // check): nothing over it reaches the workspace.
    const arrived = st.isFile() ? st.size : entries.reduce((n, e) => n + (e.dir ? 0 : e.st.size), 0);
    if (arrived > max) {
      throw err.denied(`download of ${remoteShown(remote)} arrived as ${arrived} bytes (${source.bytes} when checked: it grew meanwhile), over host.maxDownloadBytes (${max} bytes); nothing was written to the workspace`);
    }
    // A tree that holds a name never written is refused whole, before
    // anything is written, so nothing is silently left out.
    const byDir = new Map([["", []]]);
    for (const e of entries) {
      const slash = e.rel.lastIndexOf("/");
      const dir = slash < 0 ? "" : e.rel.slice(0, slash);
      if (!byDir.has(dir)) byDir.set(dir, []);
      byDir.get(dir).push(e.rel.slice(slash + 1));
    }
    for (const [dir, names] of byDir) {
      if (lfs.looksLikeGitDir(names)) {
        throw err.localIo(`${remote} holds ${dir ? `${remote}/${dir}` : remote}, which git would take for a repository (HEAD with refs/objects): the host never writes version-control metadata (its config runs code); download the parts around it, or rename it on the cluster`);
      }
    }
    for (const e of entries) {
      const bad = lfs.neverWritten(e.rel);
      if (bad) {
        throw err.localIo(`${remote} holds ${remote}/${e.rel} (${bad}): the host never writes version-control metadata or direnv files (they run code); download the parts around it, or rename it on the cluster`);
      }
    }
    const baseFd = lfs.openBase(local.base);
    try {
      const names = lfs.parts(local.rel);
      const name = names.pop();
      if (st.isFile()) {
        opts.beforeOpen?.(shown);
        lfs.inDir(baseFd, names, true, (dir) => placeFile(dir, name, landed, st, shown, opts));
        return { files: 1, bytes: BigInt(st.size) };
      }
      opts.beforeOpen?.(shown);
      lfs.inDir(baseFd, names, true, (dir) => {
        let here = null;
        try {
          here = fs.lstatSync(lfs.at(dir, name));
        } catch (e) {
          if (e.code !== "ENOENT") throw e;
        }
        if (here?.isSymbolicLink()) throw err.denied(`${shown} is a symlink; refusing to write through it`);
        if (here && !here.isDirectory()) throw err.localIo(`${shown} exists and is not a directory`);
      });
      // Made now, so an empty tree arrives as an empty directory.
      lfs.inDir(baseFd, [...names, name], true, () => {});
      let files = 0;
      let bytes = 0;
      for (const e of entries) {
        const dest = shownOf(local, e.rel);
        const to = [...names, name, ...lfs.parts(e.rel)];
        // Walked again for every entry: whatever was swapped in since the
        // last one is met here, and a link is refused.
        opts.beforeOpen?.(dest);
        if (e.dir) {
          lfs.inDir(baseFd, to, true, () => {});
        } else {
          const last = to.pop();
          lfs.inDir(baseFd, to, true, (dir) => placeFile(dir, last, path.join(landed, e.rel), e.st, dest, opts));
          files += 1;
          bytes += e.st.size;
        }
      }
      return { files, bytes: BigInt(bytes) };
    } finally {
      fs.closeSync(baseFd);
    }
  } catch (e) {
    throw localFailure(e, `downloading ${remote} to ${shown}`);
  } finally {
    fs.rmSync(staging, { recursive: true, force: true });
  }
}
