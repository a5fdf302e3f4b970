// Local file operations that cannot be led out of the directory they start
// from, the twin of host/src/local_fs.rs. Node has no openat(2), so a file
// in an opened directory is named `/proc/self/fd/<fd>/<name>`: the kernel
// resolves the magic link to the very directory that fd holds (wherever it
// is now, whatever was swapped in at its old path) and looks `name` up in
// it, with O_NOFOLLOW applying to `name`. Every path is walked that way one
// real directory at a time from the opened workspace, never re-resolved
// from the top after a check. (This needs Linux's /proc, as the lock needs
// util-linux flock; without it local file access fails closed.)
//
// What it guarantees, whatever an agent plants in its workspace or swaps in
// while the host works:
// - `walk` reaches a directory only through real directories (a symlink at
//   any component is refused);
// - `createNew` never opens an existing name (O_CREAT|O_EXCL|O_NOFOLLOW
//   fails on a planted file, hard link or symlink alike);
// - `replace` writes a fresh file under an unpredictable name, syncs it and
//   renames it over the target (a planted link there is replaced, never
//   written through);
// - `openRegular` opens without following a final symlink and without
//   blocking on a FIFO, and keeps the file only when it is a regular file.

import crypto from "node:crypto";
import fs from "node:fs";
import * as err from "./host-error.js";

const { O_RDONLY, O_WRONLY, O_RDWR, O_CREAT, O_EXCL, O_NOFOLLOW, O_NONBLOCK, O_DIRECTORY } = fs.constants;

/**
 * Names no download ever writes, at any depth (host/src/local_paths.rs
 * NEVER_WRITTEN): version-control metadata (its hooks and config run code
 * on the next `git` command) and direnv's files (run by the shell on `cd`).
 */
export const NEVER_WRITTEN = [".git", ".hg", ".svn", ".bzr", ".jj", ".envrc", ".direnv"];

/**
 * The first component of the relative path `rel` that no download writes,
 * compared without regard to ASCII case (on a case-insensitive file system
 * `.GIT` is `.git` to git).
 */
export function neverWritten(rel) {
  const hit = rel.split("/").find((name) => NEVER_WRITTEN.includes(name.toLowerCase()));
  return hit === undefined ? undefined : hit.toLowerCase();
}

/**
 * Whether a directory holding `names` is a git repository to git, whatever
 * it is called (host/src/local_paths.rs looks_like_git_dir): `HEAD` with
 * `refs`, `objects` or `commondir`; git then runs its config's fsmonitor,
 * hooks and filters.
 */
export function looksLikeGitDir(names) {
  const lower = names.map((n) => n.toLowerCase());
  return lower.includes("head") && ["refs", "objects", "commondir"].some((n) => lower.includes(n));
}

/** `name` (one component) inside the directory open as `dirFd`. */
export function at(dirFd, name) {
  return `/proc/self/fd/${dirFd}/${name}`;
}

let procChecked = false;

/** Fail closed, with a reason, where /proc/self/fd cannot name an open directory. */
function requireProc(fd) {
  if (procChecked) return;
  try {
    fs.statSync(`/proc/self/fd/${fd}/.`);
  } catch (e) {
    throw err.localIo(`this host reaches local files through /proc/self/fd (Linux), which is not usable here: ${e.message}`);
  }
  procChecked = true;
}

/** Open the directory `dir` (the operator's, e.g. the workspace: followed if it is a symlink). */
export function openBase(dir) {
  const fd = fs.openSync(dir, O_RDONLY | O_DIRECTORY);
  try {
    requireProc(fd);
  } catch (e) {
    fs.closeSync(fd);
    throw e;
  }
  return fd;
}

/** The clean components of a relative path (callers have checked it). */
export function parts(rel) {
  return rel.split("/").filter((s) => s !== "" && s !== ".");
}

/** Why `name` in `dirFd` could not be entered or opened: a link says so. */
function explain(dirFd, name, e, want) {
  let st;
  try {
    st = fs.lstatSync(at(dirFd, name));
  } catch {
    return e;
  }
  if (st.isSymbolicLink()) {
    return Object.assign(new Error(`${name} is a symbolic link; the host never follows links here`), { code: "ELOOP" });
  }
  if (want === "dir" && !st.isDirectory()) {
    return Object.assign(new Error(`${name} exists and is not a directory`), { code: "ENOTDIR" });
  }
  return e;
}

function openDirAt(dirFd, name) {
  try {
    return fs.openSync(at(dirFd, name), O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
  } catch (e) {
    throw explain(dirFd, name, e, "dir");
  }
}

/**
 * The directory `names` below the open directory `fromFd`, one real
 * directory at a time; with `create`, missing ones are made. Returns a new
 * fd the caller closes. Errors are Node errors (with `code`).
 */
export function walk(fromFd, names, create) {
  let fd = fs.openSync(`/proc/self/fd/${fromFd}`, O_RDONLY | O_DIRECTORY);
  try {
    for (const name of names) {
      let next;
      try {
        next = openDirAt(fd, name);
      } catch (e) {
        if (e.code !== "ENOENT" || !create) throw e;
        try {
          // mkdir never follows a link at its last component (EEXIST).
          fs.mkdirSync(at(fd, name), 0o755);
        } catch (m) {
          // Made by someone else meanwhile: fine if it is a directory.
          if (m.code !== "EEXIST") throw m;
        }
        next = openDirAt(fd, name);
      }
      fs.closeSync(fd);
      fd = next;
    }
    return fd;
  } catch (e) {
    fs.closeSync(fd);
    throw e;
  }
}

/** Run `fn(dirFd)` on the walked directory, closing it afterwards. */
export function inDir(fromFd, names, create, fn) {
  const fd = walk(fromFd, names, create);
  try {
    return fn(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** Create `name` in `dirFd`, failing (EEXIST) if anything at all is there. */
export function createNew(dirFd, name, mode) {
  return fs.openSync(at(dirFd, name), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, mode);
}

/**
 * Open the existing regular file `name` of `dirFd` (read-only, or
 * read-write with `write`): a final symlink is not followed, a FIFO does
 * not block, anything but a regular file is refused. Returns [fd, stat].
 */
export function openRegular(dirFd, name, write = false) {
  let fd;
  try {
    fd = fs.openSync(at(dirFd, name), (write ? O_RDWR : O_RDONLY) | O_NOFOLLOW | O_NONBLOCK);
  } catch (e) {
    throw explain(dirFd, name, e, "file");
  }
  const st = fs.fstatSync(fd);
  if (!st.isFile()) {
    fs.closeSync(fd);
    throw Object.assign(new Error(`${name} is not a regular file`), { code: "EINVAL" });
  }
  return [fd, st];
}

/** All of an open file, refusing more than `max` bytes. */
export function readAll(fd, max, shown) {
  const chunks = [];
  let size = 0;
  const buf = Buffer.alloc(1 << 20);
  for (;;) {
    const n = fs.readSync(fd, buf, 0, buf.length, null);
    if (n === 0) break;
    size += n;
    if (size > max) throw err.localIo(`${shown} is larger than ${max} bytes`);
    chunks.push(Buffer.from(buf.subarray(0, n)));
  }
  return Buffer.concat(chunks);
}

/** The regular file `name` of `dirFd` (at most `max` bytes), or undefined when it does not exist. */
export function readRegular(dirFd, name, max, shown) {
  let fd;
  try {
    [fd] = openRegular(dirFd, name, false);
  } catch (e) {
    if (e.code === "ENOENT") return undefined;
    throw e;
  }
  try {
    return readAll(fd, max, shown);
  } finally {
    fs.closeSync(fd);
  }
}

/** At most `max` UTF-8 bytes of `name`, cut at a character boundary. */
function short(name, max) {
  let out = "";
  let bytes = 0;
  for (const c of name) {
    const n = Buffer.byteLength(c);
    if (bytes + n > max) break;
    out += c;
    bytes += n;
  }
  return out;
}

/** A name no one can have planted in advance (64 random bits). */
export function unpredictableName(stem, suffix) {
  return `.${short(stem, 120)}.${crypto.randomBytes(8).toString("hex")}${suffix}`;
}

/**
 * Replace `name` in `dirFd` with `contents`, atomically: a fresh file under
 * an unpredictable name (created exclusively), synced, renamed over `name`,
 * then the directory synced. A crash leaves the old or the new content.
 */
export function replace(dirFd, name, contents) {
  let tmp;
  let fd;
  for (let attempts = 0; ; attempts++) {
    tmp = unpredictableName(name, ".tmp");
    try {
      fd = createNew(dirFd, tmp, 0o644);
      break;
    } catch (e) {
      // Something sits at that name: take another one.
      if (e.code !== "EEXIST" || attempts >= 8) throw e;
    }
  }
  try {
    try {
      fs.writeFileSync(fd, contents);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(at(dirFd, tmp), at(dirFd, name));
    fs.fsyncSync(dirFd);
  } catch (e) {
    try {
      fs.unlinkSync(at(dirFd, tmp));
    } catch {
      // Already gone (or never renamed away): nothing of ours is left.
    }
    throw e;
  }
}
