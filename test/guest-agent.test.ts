// tether-guest as shipped (the esbuild bundle and the single executables from build/guest/) running inside the
// testbed namespace, which plays the VM: the listing it reports is the guest's own, over the real protocol on the
// agent's unix socket (on the shared filesystem, so the test connects to it directly).
import type { ChildProcess } from 'node:child_process';
import { execFileSync, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { type AddressInfo, connect, createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { encodeFrame, FrameDecoder, type Listener, type PortDelta, PROTOCOL_VERSION } from '@tether/protocol';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { connectClient, type TestClient } from '../guest/src/testing/client.js';
import { canRunTestbed, type Testbed, useTestbed } from './helpers/testbed.js';
import { waitFor } from './helpers/wait.js';

const BUILD = join(import.meta.dirname, '../build/guest');
const BUNDLE = join(BUILD, 'tether-guest.cjs');
const SEA_X64 = join(BUILD, 'tether-guest-linux-x64');
const SEA_ARM64 = join(BUILD, 'tether-guest-linux-arm64');
const QEMU = '/usr/bin/qemu-aarch64-static';
const HOP_FIXTURE = join(import.meta.dirname, 'helpers', 'port-hop.mjs');

// Opens the sockets named on the command line (`tcp@127.0.0.1`, `tcpdual@::`, `udp@::1`, `tcp*1000@127.0.0.1`) on
// port 0, prints their ports as JSON, and keeps them until stdin closes (or it is killed).
const SOCKETS_PY = `
import json, resource, socket, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
keep, ports = [], []
for spec in sys.argv[1:]:
    kind, host = spec.split('@', 1)
    kind, count = (kind.split('*') + ['1'])[:2]
    for _ in range(int(count)):
        fam = socket.AF_INET6 if ':' in host else socket.AF_INET
        s = socket.socket(fam, socket.SOCK_DGRAM if kind == 'udp' else socket.SOCK_STREAM)
        if fam == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0 if kind == 'tcpdual' else 1)
        s.bind((host, 0))
        if kind != 'udp':
            s.listen(8)
        keep.append(s)
        ports.append(s.getsockname()[1])
print(json.dumps(ports), flush=True)
sys.stdin.read()
`;

// Prints `<mask> <name>` for each inotify event on the directory argv[1] (and its children), after a `ready` line.
const WATCH_PY = `
import ctypes, os, struct, sys
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.inotify_init()
IN_MODIFY, IN_ATTRIB, IN_CREATE, IN_DELETE = 0x2, 0x4, 0x100, 0x200
if libc.inotify_add_watch(fd, sys.argv[1].encode(), IN_MODIFY | IN_ATTRIB | IN_CREATE | IN_DELETE) < 0:
    sys.exit('inotify_add_watch failed: errno %d' % ctypes.get_errno())
print('ready', flush=True)
while True:
    buf = os.read(fd, 65536)
    i = 0
    while i < len(buf):
        wd, mask, cookie, n = struct.unpack_from('iIII', buf, i)
        name = buf[i + 16:i + 16 + n].rstrip(b'\\0').decode()
        print(mask, name or '.', flush=True)
        i += 16 + n
`;
const IN_ATTRIB = 0x4;

/** The guest's listener set as a subscribed client sees it: the snapshot, then every delta applied in order. */
class Tracker {
  readonly current = new Map<string, Listener>();
  readonly removed: Listener[] = [];
  seq = 0;
  gaps = 0;

  constructor(client: TestClient, snapshot: { seq: number; listeners: Listener[] }) {
    this.seq = snapshot.seq;
    for (const l of snapshot.listeners) this.current.set(key(l), l);
    client.peer.onEvent('ports.delta', (d) => this.apply(d));
  }

  find(proto: string, port: number): Listener | undefined {
    return [...this.current.values()].find((l) => l.proto === proto && l.port === port);
  }

  private apply(d: PortDelta): void {
    if (d.seq !== this.seq + 1) this.gaps++;
    this.seq = d.seq;
    for (const l of d.removed) {
      this.current.delete(key(l));
      this.removed.push(l);
    }
    for (const l of d.added) this.current.set(key(l), l);
  }
}

const key = (l: Listener) => `${l.proto}/${l.ip}/${l.port}`;

/** Starts a guest process holding the given sockets; resolves with their ports. */
async function guestSockets(tb: Testbed, specs: string[]): Promise<{ child: ChildProcess; ports: number[] }> {
  const child = tb.spawn('python3', ['-c', SOCKETS_PY, ...specs]);
  let out = '';
  child.stdout?.setEncoding('utf8').on('data', (s: string) => {
    out += s;
  });
  const line = await waitFor(() => out.includes('\n') && out.split('\n')[0], { what: `guest sockets ${specs}` });
  return { child, ports: JSON.parse(line) as number[] };
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, 'exit');
  child.kill('SIGTERM');
  await exited;
}

/** Starts an agent in the guest and connects to it once its socket answers. */
async function startAgent(
  tb: Testbed,
  argv: string[],
  socket: string,
): Promise<{ agent: ChildProcess; log: string[] }> {
  const [cmd, ...args] = argv;
  const agent = tb.spawn(cmd, [...args, 'run', '--socket', socket, '--socket-owner', tb.user, '--log-level', 'debug']);
  const log: string[] = [];
  agent.stdout?.setEncoding('utf8').on('data', (s: string) => log.push(s));
  agent.stderr?.setEncoding('utf8').on('data', (s: string) => log.push(s));
  await waitFor(() => log.join('').includes('agent listening') || agent.exitCode !== null, {
    what: `${cmd} to listen on ${socket}`,
  });
  if (agent.exitCode !== null) throw new Error(`agent exited ${agent.exitCode}: ${log.join('')}`);
  return { agent, log };
}

describe.skipIf(!canRunTestbed())('tether-guest in the testbed', () => {
  const testbed = useTestbed();
  let agent: ChildProcess;
  let client: TestClient;
  let tracker: Tracker;
  let hostServer: Server;
  let agentLog: string[];
  let agentSocket: string;

  beforeAll(async () => {
    if (!existsSync(BUNDLE)) throw new Error(`${BUNDLE} is missing: run npm run build:guest first`);
    hostServer = createServer();
    hostServer.listen(0, '127.0.0.1');
    await once(hostServer, 'listening');

    const tb = testbed();
    const socket = join(tb.guestDir, 'agent.sock');
    agentSocket = socket;
    ({ agent, log: agentLog } = await startAgent(tb, ['node', BUNDLE], socket));
    client = await connectClient(socket, []);
    tracker = new Tracker(client, await client.peer.request('ports.subscribe', {}));
  });

  afterAll(async () => {
    client?.peer.close('test done');
    if (agent) await stopChild(agent);
    await new Promise((r) => hostServer?.close(r));
  });

  it('ignores events and refuses methods from a newer host without dropping its link', async () => {
    const sock = connect(agentSocket);
    await once(sock, 'connect');
    const decoder = new FrameDecoder();
    const replies: { t: string; id?: number; ok?: boolean; e?: unknown }[] = [];
    sock.on('data', (chunk: Buffer) => replies.push(...(decoder.push(chunk) as typeof replies)));
    try {
      const future = encodeFrame({ t: 'evt', e: 'vm.future', d: { paths: ['/a'] } });
      sock.write(encodeFrame({ t: 'hello', v: PROTOCOL_VERSION, agent: 'tether/9.0.0', caps: [] }));
      sock.write(Buffer.concat([future, future, encodeFrame({ t: 'req', id: 1, m: 'vm.future', p: {} })]));
      sock.write(encodeFrame({ t: 'req', id: 2, m: 'ping', p: { t: 1 } }));
      await waitFor(() => replies.some((r) => r.id === 2), { what: 'the ping answered' });
      expect(replies.find((r) => r.id === 1)).toMatchObject({
        ok: false,
        e: { code: 'unknown_method', message: 'no method vm.future' },
      });
      expect(replies.find((r) => r.id === 2)).toMatchObject({ ok: true });
      const warned = () => agentLog.join('').match(/ignoring unknown event vm\.future from the host/g) ?? [];
      await waitFor(() => warned().length > 0, { what: 'the unknown event logged' });
      expect(warned()).toHaveLength(1);
      expect(sock.destroyed).toBe(false);
    } finally {
      sock.destroy();
    }
  });

  it('sees a server that hops ports (one closes, the next opens in the same tick) without waiting for a full scan', async () => {
    // The fixture's poller never runs another full scan, so a hop that the per-tick checks miss is missed for good:
    // the deadline only has to be long enough for a loaded machine, not short enough to measure anything.
    const tb = testbed();
    const hops = 8;
    const r = await tb.exec(`node ${HOP_FIXTURE} 47100 ${hops} 10000`, { timeoutMs: 120_000 });
    expect(r.stderr).toBe('');
    const seen = r.stdout
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { port: number; ms: number | null });
    console.log(
      `port hops listed after: ${seen.map((h) => (h.ms === null ? 'never' : `${h.ms.toFixed(0)} ms`)).join(', ')}`,
    );
    expect(seen.map((h) => h.port)).toEqual(Array.from({ length: hops }, (_, i) => 47101 + i));
    expect(seen.every((h) => h.ms !== null)).toBe(true);
  });

  it('reports the guest listing, not the host one, and answers info', async () => {
    const tb = testbed();
    expect(tracker.find('tcp', 22)).toMatchObject({ ip: '127.0.0.1' }); // the testbed's sshd
    expect(tracker.find('tcp', (hostServer.address() as AddressInfo).port)).toBeUndefined();
    const info = await client.peer.request('info', {});
    expect(info).toMatchObject({ version: '0.1.0', uid: 0, caps: expect.arrayContaining(['ports', 'udp', 'fs']) });
    expect(info.listeners).toBe(tracker.current.size);
    expect(client.peer.remote?.agent).toBe('tether-guest/0.1.0');
    const st = execFileSync('stat', ['-c', '%a %U', join(tb.guestDir, 'agent.sock')], { encoding: 'utf8' }).trim();
    expect(st).toBe(`600 ${tb.user}`);
  });

  it('sees TCP over IPv4, IPv6 and dual stack, and UDP over IPv4 and IPv6', async () => {
    const { child, ports } = await guestSockets(testbed(), [
      'tcp@127.0.0.1',
      'tcp@::1',
      'tcpdual@::',
      'udp@127.0.0.1',
      'udp@::1',
    ]);
    const [t4, t6, dual, u4, u6] = ports;
    await waitFor(() => tracker.find('udp', u6), { what: 'all five listeners' });
    expect(tracker.find('tcp', t4)).toMatchObject({
      family: 4,
      ip: '127.0.0.1',
      command: expect.stringContaining('python3'),
    });
    expect(tracker.find('tcp', t6)).toMatchObject({ family: 6, ip: '::1' });
    expect(tracker.find('tcp', dual)).toMatchObject({ family: 6, ip: '::' });
    expect(tracker.find('udp', u4)).toMatchObject({ family: 4, ip: '127.0.0.1' });
    expect(tracker.find('udp', u6)).toMatchObject({ family: 6, ip: '::1', pid: expect.any(Number) });
    await stopChild(child);
    await waitFor(() => ports.every((p) => !tracker.find('tcp', p) && !tracker.find('udp', p)), {
      what: 'the five listeners to be removed',
    });
  });

  it('stays consistent with listeners that open and close quickly', async () => {
    const tb = testbed();
    await tb.exec(
      `python3 -c "import socket,time
for _ in range(30):
    s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(1); time.sleep(0.01); s.close()"`,
    );
    const fresh = await client.peer.request('ports.snapshot', {});
    await waitFor(() => tracker.seq === fresh.seq, { what: 'deltas up to the fresh snapshot' });
    expect([...tracker.current.keys()].sort()).toEqual(fresh.listeners.map(key).sort());
    expect(tracker.gaps).toBe(0);
  });

  it('reports 1,000 listeners opened at once, and their removal', async () => {
    const { child, ports } = await guestSockets(testbed(), ['tcp*1000@127.0.0.1']);
    await waitFor(() => ports.every((p) => tracker.find('tcp', p)), { what: '1,000 listeners', timeoutMs: 20_000 });
    await stopChild(child);
    await waitFor(() => ports.every((p) => !tracker.find('tcp', p)), { what: '1,000 removals', timeoutMs: 20_000 });
    expect(tracker.gaps).toBe(0);
  });

  it('attributes a python3 -m http.server listener to its process', async () => {
    const port = 18_765; // the namespace is fresh: nothing else listens there
    const server = testbed().spawn('python3', ['-m', 'http.server', '--bind', '127.0.0.1', String(port)]);
    const l = await waitFor(() => tracker.find('tcp', port), { what: `http.server on ${port}` });
    expect(l.command).toMatch(/python3 -m http\.server/);
    expect(l.pid).toBe(server.pid); // nsenter --net execs the command in place
    await stopChild(server);
  });

  it('makes file events from the host visible to inotify watchers on an sshfs mount', async () => {
    const tb = testbed();
    const exported = join(tb.stateDir, 'fs-export');
    const mnt = join(tb.guestDir, 'fs-mnt');
    await tb.exec(
      `mkdir -p ${exported}/sub ${mnt} && echo a > ${exported}/a.txt && chown -R ${tb.user} ${exported} ${mnt}`,
    );
    const opts = `IdentityFile=${tb.identityFile},StrictHostKeyChecking=no,UserKnownHostsFile=/dev/null,allow_other`;
    const mounted = await tb.exec(`sshfs -o ${opts} ${tb.user}@127.0.0.1:${exported} ${mnt}`);
    expect(mounted.code, mounted.stderr).toBe(0);
    const watcher = tb.spawn('python3', ['-c', WATCH_PY, mnt]);
    const seen: string[] = [];
    let out = '';
    watcher.stdout?.setEncoding('utf8').on('data', (s: string) => {
      out += s;
      const lines = out.split('\n');
      out = lines.pop() ?? '';
      seen.push(...lines);
    });
    const attrib = (name: string) =>
      seen.some((l) => (Number(l.split(' ')[0]) & IN_ATTRIB) !== 0 && l.endsWith(` ${name}`));
    try {
      await waitFor(() => seen.includes('ready'), { what: 'inotify watcher' });
      client.peer.notify('fs.events', { root: mnt, events: [{ path: 'a.txt', kind: 'change' }] });
      await waitFor(() => attrib('a.txt'), { what: 'IN_ATTRIB on a.txt' });
      // Created on the host (by the exporting user: SFTP may set times only on its own files); the guest kernel
      // does not know of it until the agent touches it.
      await tb.exec(`echo b > ${exported}/b.txt`, { user: tb.user });
      client.peer.notify('fs.events', { root: mnt, events: [{ path: 'b.txt', kind: 'add' }] });
      await waitFor(() => attrib('b.txt') && attrib('.'), { what: 'IN_ATTRIB on b.txt and on the directory' });

      // Not an sshfs mount: ignored, and the client stays connected.
      client.peer.notify('fs.events', { root: tb.guestDir, events: [{ path: 'agent.sock', kind: 'change' }] });
      expect(await client.peer.request('info', {})).toMatchObject({ version: '0.1.0' });
    } finally {
      await stopChild(watcher);
      await tb.exec(`fusermount -u ${mnt}`);
    }
  });

  it('runs as a single executable with an empty environment and answers info', async () => {
    const tb = testbed();
    const socket = join(tb.guestDir, 'sea.sock');
    const { agent: sea } = await startAgent(tb, ['env', '-i', SEA_X64], socket);
    try {
      const c = await connectClient(socket, []);
      const info = await c.peer.request('info', {});
      expect(info.pid).not.toBe(process.pid);
      expect(info.arch).toBe('x64');
      expect((await c.peer.request('ports.snapshot', {})).listeners.length).toBeGreaterThan(0);
      c.peer.close('test done');
    } finally {
      await stopChild(sea);
    }
    expect(existsSync(socket)).toBe(false); // unlinked on SIGTERM
  });

  it('as root with a tracefs, wakes its scanner on kernel listen events and removes its trace instance on exit', async () => {
    const tb = testbed();
    // A tracefs of the test's own: this machine may not mount one (systemd mounts /sys/kernel/tracing on a VM).
    const tracefs = mkdtempSync(join(tmpdir(), 'tether-tracefs-'));
    execFileSync('mount', ['-t', 'tracefs', 'nodev', tracefs]);
    const socket = join(tb.guestDir, 'traced.sock');
    let traced: ChildProcess | undefined;
    try {
      ({ agent: traced } = await startAgent(tb, ['node', BUNDLE], socket));
      const c = await connectClient(socket, []);
      const info = await c.peer.request('info', {});
      expect(info.listenEvents).toEqual({ on: true, detail: expect.stringMatching(/^tracefs \//) });
      // Instances are the kernel's: every tracefs mount shows the same ones.
      const instance = join(tracefs, 'instances', `tether-guest-${info.pid}`);
      expect(existsSync(instance)).toBe(true);

      const t = new Tracker(c, await c.peer.request('ports.subscribe', {}));
      const { child, ports } = await guestSockets(tb, ['tcp@127.0.0.1']);
      await waitFor(() => t.find('tcp', ports[0]), { what: `the guest listener on ${ports[0]}` });
      await stopChild(child);
      await waitFor(() => !t.find('tcp', ports[0]), { what: `the guest listener on ${ports[0]} to go` });
      c.peer.close('test done');

      await stopChild(traced); // hangs if the blocked read of trace_pipe is not ended
      expect(existsSync(instance)).toBe(false);
    } finally {
      if (traced) await stopChild(traced);
      spawnSync('umount', ['-l', tracefs]);
      rmSync(tracefs, { recursive: true, force: true });
    }
  });

  it('prints the manifest version and hash from the bundle and both single executables', () => {
    const manifest = JSON.parse(readFileSync(join(BUILD, 'manifest.json'), 'utf8'));
    const expected = `${manifest.version} ${manifest.hash}\n`;
    expect(execFileSync('node', [BUNDLE, 'version'], { encoding: 'utf8' })).toBe(expected);
    expect(execFileSync(SEA_X64, ['version'], { encoding: 'utf8', env: {} })).toBe(expected);
    if (!existsSync(QEMU) && process.env.CI !== 'true')
      return console.warn('qemu-aarch64-static missing: arm64 untested');
    const arm = execFileSync(QEMU, ['-L', '/usr/aarch64-linux-gnu', SEA_ARM64, 'version'], { encoding: 'utf8' });
    expect(arm).toBe(expected);
  });
});
