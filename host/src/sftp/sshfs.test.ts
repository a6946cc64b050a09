// Real FUSE: `sshfs -o slave` speaks SFTP on its stdio, which is connected straight to serveSftp(); the test then
// does ordinary POSIX file work on the mountpoint and checks the result in the exported directory.
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, promises as fsp } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Duplex } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type SftpServerOptions, type SftpSession, serveSftp } from './server.js';

const canMount = process.getuid?.() === 0 && existsSync('/dev/fuse');
if (!canMount && process.env.CI === 'true') throw new Error('sshfs tests need root and /dev/fuse in CI');
const describeFuse = canMount ? describe : describe.skip;
if (!canMount) console.warn('skipping sshfs tests: they need root and /dev/fuse');

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

async function until<T>(what: string, probe: () => Promise<T | undefined>, ms = 15_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function isMounted(mnt: string): Promise<boolean> {
  const info = await fsp.readFile('/proc/self/mountinfo', 'utf8');
  return info.split('\n').some((line) => line.split(' ')[4] === mnt && line.includes('fuse.sshfs'));
}

interface Mount {
  mnt: string;
  child: ChildProcess;
  session: SftpSession;
  closed: Promise<{ reason: string }>;
  unmount(): Promise<void>;
}

async function mountSshfs(root: string, mnt: string, sshfsOpts: string[], serverOpts: Partial<SftpServerOptions>) {
  await fsp.mkdir(mnt, { recursive: true });
  const child = spawn('sshfs', ['-f', '-o', ['slave', ...sshfsOpts].join(','), `:${root}`, mnt], {
    stdio: ['pipe', 'pipe', 'inherit'],
  });
  const stream = Duplex.from({ readable: child.stdout!, writable: child.stdin! });
  const session = serveSftp(stream, { root, ...serverOpts });
  const closed = new Promise<{ reason: string }>((resolve) => session.once('close', resolve));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  await until(`sshfs mount on ${mnt}`, async () => ((await isMounted(mnt)) ? true : undefined));
  const m: Mount = {
    mnt,
    child,
    session,
    closed,
    async unmount() {
      if (await isMounted(mnt)) {
        await new Promise<void>((resolve) => execFile('fusermount3', ['-u', mnt], () => resolve()));
      }
      const gone = await Promise.race([exited.then(() => true), new Promise((r) => setTimeout(r, 5000, false))]);
      if (!gone && child.pid) process.kill(child.pid, 'SIGTERM');
      await exited;
    },
  };
  return m;
}

let tmp: string;
let root: string;
let outside: string;
let rw: Mount;
let ro: Mount;
let follow: Mount;

beforeAll(async () => {
  if (!canMount) return;
  tmp = await fsp.mkdtemp(join(tmpdir(), 'tether-sshfs-'));
  root = join(tmp, 'export');
  outside = join(tmp, 'outside');
  await fsp.mkdir(root);
  await fsp.mkdir(outside);
  await fsp.writeFile(join(outside, 'secret'), 'top secret');
  await fsp.symlink(outside, join(root, 'esc'));
  await fsp.writeFile(join(root, 'existing'), 'already here');
  rw = await mountSshfs(root, join(tmp, 'mnt'), [], {});
  ro = await mountSshfs(root, join(tmp, 'mnt-ro'), [], { readOnly: true });
  follow = await mountSshfs(root, join(tmp, 'mnt-follow'), ['follow_symlinks'], {});
}, 60_000);

afterAll(async () => {
  if (!canMount) return;
  for (const m of [rw, ro, follow]) await m?.unmount();
  await fsp.rm(tmp, { recursive: true, force: true });
}, 60_000);

interface GuestRun {
  code: number;
  stdout: string;
  stderr: string;
}

// Everything that touches a mountpoint runs in a child process: a blocking syscall on the mount from this process
// (the one serving it) would deadlock, and FUSE calls from here could exhaust the libuv threadpool the server needs.
// The child enters the mount with `cd`, not spawn's `cwd`: libuv blocks the parent until the child has exec'd, so
// a chdir into the mount before exec would wait on this very process.
function guest(script: string, cwd: string): Promise<GuestRun> {
  return new Promise((resolve) => {
    const opts = { cwd: tmp, timeout: 60_000, maxBuffer: 1 << 20 };
    execFile('bash', ['-c', `cd "$0" || exit 99\n${script}`, cwd], opts, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

async function guestOk(script: string, cwd = rw.mnt): Promise<string> {
  const run = await guest(`set -e\n${script}`, cwd);
  expect(run.code, `${script}\n${run.stderr}`).toBe(0);
  return run.stdout;
}

const hostText = (name: string) => fsp.readFile(join(root, name), 'utf8');

describeFuse('sshfs over the builtin server', { timeout: 120_000 }, () => {
  it('writes and reads back files from 1 byte to 16 MiB', async () => {
    for (const size of [1, 4095, 4096, 65537, 1024 * 1024 + 3, 16 * 1024 * 1024]) {
      const data = randomBytes(size);
      const src = join(tmp, `src-${size}`);
      await fsp.writeFile(src, data);
      const out = await guestOk(`cp ${src} f-${size}\nsha256sum < f-${size}`);
      expect(out.split(' ')[0], `read back through the mount (${size} bytes)`).toBe(sha256(data));
      expect(sha256(await fsp.readFile(join(root, `f-${size}`))), `host copy (${size} bytes)`).toBe(sha256(data));
    }
    expect(rw.session.stats.bytesWritten).toBeGreaterThanOrEqual(16 * 1024 * 1024);
    expect(rw.session.stats.bytesRead).toBeGreaterThanOrEqual(16 * 1024 * 1024);
  });

  it('appends and truncates', async () => {
    await guestOk('printf abc > grow\nprintf def >> grow\nprintf ghi >> grow');
    expect(await hostText('grow')).toBe('abcdefghi');
    await guestOk('truncate -s 4 grow');
    expect(await hostText('grow')).toBe('abcd');
    await guestOk('truncate -s 6 grow');
    expect(await fsp.readFile(join(root, 'grow'))).toEqual(Buffer.from('abcd\0\0'));
  });

  it('renames over an existing file', async () => {
    await guestOk('echo new content > new\necho old content > old\nmv -f new old');
    expect(await hostText('old')).toBe('new content\n');
    expect(existsSync(join(root, 'new'))).toBe(false);
  });

  it('keeps an unlinked file readable while it is open', async () => {
    const out = await guestOk('echo still readable > doomed\nexec 3<doomed\nrm doomed\ntest ! -e doomed\ncat <&3');
    expect(out).toBe('still readable\n');
    expect(existsSync(join(root, 'doomed'))).toBe(false);
    // FUSE keeps the open file under a hidden name and removes it once the last descriptor is closed.
    await until('hidden file removal', async () =>
      (await fsp.readdir(root)).some((n) => n.startsWith('.fuse_hidden')) ? undefined : true,
    );
  });

  it('creates and lists a directory of 2,000 entries', async () => {
    const out = await guestOk('mkdir many\ncd many\ntouch e{0..1999}\nls | wc -l');
    expect(out.trim()).toBe('2000');
    expect((await fsp.readdir(join(root, 'many'))).length).toBe(2000);
  });

  it('creates 200 files concurrently without losing any', async () => {
    const out = await guestOk(
      'mkdir rapid\ncd rapid\nfor i in $(seq 0 199); do (echo "file $i" > c$i) & done\nwait\nls | wc -l',
    );
    expect(out.trim()).toBe('200');
    expect((await fsp.readdir(join(root, 'rapid'))).length).toBe(200);
    expect(await hostText('rapid/c199')).toBe('file 199\n');
  });

  it('makes symlinks and hard links', async () => {
    const out = await guestOk('printf T > target\nln -s target sym\nreadlink sym\ncat sym\necho\nln target hard');
    expect(out).toBe('target\nT\n');
    expect(await fsp.readlink(join(root, 'sym'))).toBe('target');
    expect((await fsp.stat(join(root, 'target'))).nlink).toBe(2);
    expect((await fsp.stat(join(root, 'hard'))).ino).toBe((await fsp.stat(join(root, 'target'))).ino);
  });

  it('changes mode and times', async () => {
    await guestOk('printf x > attrs\nchmod 604 attrs\ntouch -d @2000000 attrs');
    let st = await fsp.stat(join(root, 'attrs'));
    expect(st.mode & 0o777).toBe(0o604);
    expect(st.mtimeMs).toBe(2_000_000_000);
    expect(st.atimeMs).toBe(2_000_000_000);
    // sshfs fills the time it was not asked to change from its attribute cache (OpenSSH's server sees the same).
    await guestOk('touch -m -d @3000000 attrs');
    st = await fsp.stat(join(root, 'attrs'));
    expect(st.mtimeMs).toBe(3_000_000_000);
  });

  it('reports the real filesystem in statfs, and fsyncs', async () => {
    const [bsize, blocks] = (await guestOk("stat -f -c '%S %b' .")).trim().split(' ').map(Number);
    const real = await fsp.statfs(root);
    expect(bsize * blocks).toBe(real.bsize * real.blocks);
    await guestOk('printf durable > synced\nsync synced');
    expect(await hostText('synced')).toBe('durable');
  });

  it('keeps file names that are not UTF-8, byte for byte, both ways', async () => {
    // Latin-1 "café" and "naïve": valid names on Linux, invalid UTF-8.
    const hostName = Buffer.from('caf\xe9', 'latin1');
    const dirName = Buffer.from('na\xefve', 'latin1');
    const rootBytes = Buffer.from(root);
    const under = (...names: Buffer[]) => Buffer.concat([rootBytes, ...names.flatMap((n) => [Buffer.from('/'), n])]);
    await fsp.writeFile(under(hostName), 'from the host');
    await fsp.mkdir(under(dirName));
    await fsp.symlink(hostName, under(Buffer.from('link-to-latin1')));
    const out = await guestOk(
      "cat $'caf\\xe9'\necho\nls -b | grep -cF 'caf\\351'\nprintf 'from the guest' > $'na\\xefve/r\\xe9sum\\xe9'\n" +
        "mv $'caf\\xe9' $'na\\xefve/caf\\xe9'\nreadlink link-to-latin1 | od -An -c | tr -d ' \\n'",
    );
    expect(out).toBe('from the host\n1\ncaf351\\n');
    const inDir = (await fsp.readdir(under(dirName), { encoding: 'buffer' })).map((b) => b.toString('hex')).sort();
    expect(inDir).toEqual([hostName, Buffer.from('r\xe9sum\xe9', 'latin1')].map((b) => b.toString('hex')).sort());
    expect(await fsp.readFile(under(dirName, Buffer.from('r\xe9sum\xe9', 'latin1')), 'utf8')).toBe('from the guest');
  });

  it('refuses to follow a link out of the export (follow_symlinks mount)', async () => {
    const read = await guest('cat esc/secret', follow.mnt);
    expect(read.code).not.toBe(0);
    expect(read.stderr).toMatch(/Permission denied/);
    expect((await guest('ls esc/', follow.mnt)).stderr).toMatch(/Permission denied/);
    expect((await guest('echo x > esc/planted', follow.mnt)).code).not.toBe(0);
    expect(existsSync(join(outside, 'planted'))).toBe(false);
    // A link the guest creates itself that points out of the export is stored but never followed by the server.
    await fsp.symlink(outside, join(root, 'made-by-host'));
    await guest(`ln -s ${outside} made-by-guest`, rw.mnt);
    for (const link of ['made-by-host', 'made-by-guest']) {
      if (!existsSync(join(root, link))) continue;
      const r = await guest(`cat ${link}/secret`, follow.mnt);
      expect(r.code, link).not.toBe(0);
      expect(r.stdout).not.toContain('top secret');
    }
  });

  it('refuses every change on a read-only export', async () => {
    for (const cmd of ['echo x > nope', 'mkdir nope-dir', 'rm existing', 'echo x >> existing', 'chmod 600 existing']) {
      const r = await guest(cmd, ro.mnt);
      expect(r.code, cmd).not.toBe(0);
      expect(r.stderr, cmd).toMatch(/Permission denied|Operation not permitted|Read-only/);
    }
    expect(await guestOk('cat existing', ro.mnt)).toBe('already here');
    expect(existsSync(join(root, 'nope'))).toBe(false);
    expect(await hostText('existing')).toBe('already here');
  });

  it('ends the session when the filesystem is unmounted', async () => {
    const extra = await mountSshfs(root, join(tmp, 'mnt-extra'), [], {});
    expect(await guestOk('cat existing', extra.mnt)).toBe('already here');
    await extra.unmount();
    expect((await extra.closed).reason).toMatch(/closed/);
    expect(extra.session.stats.openHandles).toBe(0);
  });
});
