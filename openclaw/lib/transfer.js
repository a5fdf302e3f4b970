// File transfer over the system `sftp`, with the semantics of the native
// host (host/src/sftp.rs): a file or a directory tree each way; in trees,
// only regular files and directories travel (symlinks are skipped, never
// followed); downloads land in a private staging directory first and are
// moved into place without ever writing through a symlink in the workspace.

import fs from "node:fs";
import path from "node:path";
import { show } from "./grants.js";
import * as err from "./host-error.js";

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

/** `-mkdir` for every directory from the top down to `dir` (errors ignored: most exist). */
function mkdirs(dir) {
  const absolute = dir.startsWith("/");
  const parts = dir.split("/").filter(Boolean);
  const lines = [];
  for (let i = 1; i <= parts.length; i++) {
    lines.push(`-mkdir ${sftpWord((absolute ? "/" : "") + parts.slice(0, i).join("/"))}`);
  }
  return lines;
}

const remoteParent = (p) => {
  const i = p.lastIndexOf("/");
  return i <= 0 ? (i === 0 ? "/" : ".") : p.slice(0, i);
};

/** Every regular file and directory below `dir`, in name order, parents first. */
function walk(dir, rel = "") {
  const out = [];
  const names = fs.readdirSync(path.join(dir, rel)).sort();
  for (const name of names) {
    const r = rel ? `${rel}/${name}` : name;
    const st = fs.lstatSync(path.join(dir, r));
    if (st.isDirectory()) out.push({ rel: r, dir: true }, ...walk(dir, r));
    else if (st.isFile()) out.push({ rel: r, dir: false, size: st.size });
  }
  return out;
}

export async function upload(client, target, local, remote, opts) {
  let st;
  try {
    st = fs.statSync(local);
  } catch (e) {
    throw err.localIo(`stat ${local}: ${e.message}`);
  }
  const lines = [];
  let files = 0;
  let bytes = 0;
  if (st.isFile()) {
    lines.push(...mkdirs(remoteParent(remote)), `put -p ${sftpWord(local)} ${sftpWord(remote)}`);
    files = 1;
    bytes = st.size;
  } else if (st.isDirectory()) {
    lines.push(...mkdirs(remote));
    let entries;
    try {
      entries = walk(local);
    } catch (e) {
      throw err.localIo(`reading ${local}: ${e.message}`);
    }
    for (const e of entries) {
      const r = `${remote}/${e.rel}`;
      if (e.dir) lines.push(`-mkdir ${sftpWord(r)}`);
      else {
        lines.push(`put -p ${sftpWord(path.join(local, e.rel))} ${sftpWord(r)}`);
        files += 1;
        bytes += e.size;
      }
    }
  } else {
    throw err.localIo(`${local}: not a regular file or directory`);
  }
  await client.sftp(target, `${lines.join("\n")}\n`, opts);
  return { files, bytes: BigInt(bytes) };
}

/** Refuse to write through a symlink; say what is there now. */
function existing(p) {
  let st;
  try {
    st = fs.lstatSync(p);
  } catch {
    return null;
  }
  if (st.isSymbolicLink()) throw err.denied(`${p} is a symlink; refusing to write through it`);
  return st;
}

export async function download(client, target, remote, local, opts) {
  const parent = path.dirname(local);
  let staging;
  try {
    fs.mkdirSync(parent, { recursive: true });
    staging = fs.mkdtempSync(path.join(parent, `.${path.basename(local)}.part-`));
  } catch (e) {
    throw err.asLocalIo(e, `creating a staging directory in ${parent}`);
  }
  try {
    const landed = path.join(staging, "x");
    await client.sftp(target, `get -R -p ${sftpWord(remote)} ${sftpWord(landed)}\n`, opts);
    let st;
    try {
      st = fs.lstatSync(landed);
    } catch (e) {
      throw err.remote(`sftp ${target}: ${remote} did not arrive (${e.message})`);
    }
    if (st.isFile()) {
      if (existing(local)?.isDirectory()) throw err.localIo(`${local} exists and is a directory`);
      fs.renameSync(landed, local);
      return { files: 1, bytes: BigInt(st.size) };
    }
    if (!st.isDirectory()) throw err.remote(`${remote}: not a regular file or directory`);
    const here = existing(local);
    if (here && !here.isDirectory()) throw err.localIo(`${local} exists and is not a directory`);
    if (!here) fs.mkdirSync(local);
    let files = 0;
    let bytes = 0;
    for (const e of walk(landed)) {
      const dest = path.join(local, e.rel);
      const now = existing(dest);
      if (e.dir) {
        if (now && !now.isDirectory()) throw err.localIo(`${dest} exists and is not a directory`);
        if (!now) fs.mkdirSync(dest);
      } else {
        if (now?.isDirectory()) throw err.localIo(`${dest} exists and is a directory`);
        fs.renameSync(path.join(landed, e.rel), dest);
        files += 1;
        bytes += e.size;
      }
    }
    return { files, bytes: BigInt(bytes) };
  } catch (e) {
    throw err.asLocalIo(e, `downloading ${remote} to ${local}`);
  } finally {
    fs.rmSync(staging, { recursive: true, force: true });
  }
}
