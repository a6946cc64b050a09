// Rules, UDP and unix socket forwards against the testbed guest: range mapping with an offset, ignore rules, UDP echo
// over both families with replies reaching the right client, a static unix socket forward (socat in the guest),
// and runtime add/remove.
import dgram from 'node:dgram';
import { chmodSync, chownSync, existsSync, readFileSync, statSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  connectError,
  guestServer,
  type Harness,
  roundTrip,
  startAgent,
  stopChild,
} from './helpers/forward-fixture.js';
import { canRunTestbed, useTestbed } from './helpers/testbed.js';
import { freePort, waitFor } from './helpers/wait.js';

function udpAsk(host: string, port: number, text: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = dgram.createSocket(host.includes(':') ? 'udp6' : 'udp4');
    const timer = setInterval(() => s.send(text, port, host), 200); // UDP may drop: resend until answered
    s.on('message', (m) => {
      clearInterval(timer);
      s.close();
      resolve(m.toString());
    });
    s.on('error', (err) => {
      clearInterval(timer);
      reject(err);
    });
    s.send(text, port, host);
  });
}

/** Sends `text`, half-closes, and resolves with everything read until the end. */
function socketRoundTrip(path: string, text: string): Promise<string> {
  return new Promise<string>((resolve, reject) => {
    let out = '';
    const s = net.connect(path, () => s.end(text));
    s.on('data', (d) => {
      out += d;
    });
    s.on('end', () => resolve(out));
    s.on('close', () => resolve(out));
    s.on('error', reject);
  });
}

describe.skipIf(!canRunTestbed())('forward rules, UDP and unix sockets', () => {
  const testbed = useTestbed();
  let h: Harness;
  let guestBase: number;
  let hostBase: number;
  let ignoredPort: number;
  const guestSocket = () => join(testbed().guestDir, 'echo.sock');

  beforeAll(async () => {
    guestBase = 21_000 + Math.floor(Math.random() * 2_000) * 10;
    hostBase = guestBase + 20_000;
    ignoredPort = await freePort();
    h = await startAgent(testbed(), {
      portForwards: [
        { guestPortRange: [guestBase, guestBase + 9], hostPortRange: [hostBase, hostBase + 9] },
        { guestPort: ignoredPort, ignore: true },
        { guestSocket: guestSocket() },
      ],
    });
  });
  afterAll(async () => {
    await h?.stop();
  });

  const view = (id: string) => h.agent.forwards().find((f) => f.id === id);

  it('maps a guest port range to a host range with the same offset', async () => {
    const server = await guestServer(testbed(), 'tcp', '0.0.0.0', guestBase + 3);
    const id = `tcp/0.0.0.0:${guestBase + 3}`;
    await waitFor(() => view(id)?.state === 'forwarding', { what: `${id} forwarding` });
    expect(view(id)?.hostAddrs).toEqual([`127.0.0.1:${hostBase + 3}`, `[::1]:${hostBase + 3}`]);
    expect((await roundTrip('127.0.0.1', hostBase + 3, 'mapped')).toString()).toBe('mapped');
    expect(await connectError('127.0.0.1', guestBase + 3)).toBe('ECONNREFUSED');
    await stopChild(server);
  });

  it('ignores what an ignore rule names', async () => {
    const server = await guestServer(testbed(), 'tcp', '127.0.0.1', ignoredPort);
    const id = `tcp/127.0.0.1:${ignoredPort}`;
    await waitFor(() => view(id)?.state === 'ignored', { what: `${id} ignored` });
    expect(view(id)?.error).toContain('portForwards[1]');
    expect(await connectError('127.0.0.1', ignoredPort)).toBe('ECONNREFUSED');
    await stopChild(server);
  });

  it('does not forward the guest sshd port', () => {
    const sshd = view('tcp/127.0.0.1:22');
    expect(sshd?.state).toBe('ignored');
  });

  it("leaves the host's SSH port to the VM's sshd when a guest service listens on the same port", async () => {
    // The testbed's host port plays QEMU's hostfwd; in the guest's own network the number is free.
    const port = testbed().sshPort;
    const server = await guestServer(testbed(), 'tcp', '0.0.0.0', port);
    const id = `tcp/0.0.0.0:${port}`;
    await waitFor(() => view(id)?.state === 'ignored', { what: `${id} ignored` });
    expect(view(id)?.error).toContain(`host port ${port} is where this host reaches the VM's sshd`);
    expect(await connectError('::1', port)).toBe('ECONNREFUSED');
    await stopChild(server);
  });

  for (const ip of ['127.0.0.1', '::1']) {
    it(`relays UDP to a guest listener on ${ip} and routes replies to each client`, async () => {
      const port = await freePort(ip);
      const server = await guestServer(testbed(), 'udp', ip, port);
      const id = `udp/${ip.includes(':') ? `[${ip}]` : ip}:${port}`;
      await waitFor(() => view(id)?.state === 'forwarding', { what: `${id} forwarding` });
      const [a, b, c] = await Promise.all([
        udpAsk('127.0.0.1', port, 'one'),
        udpAsk('::1', port, 'two'),
        udpAsk('127.0.0.1', port, 'three'),
      ]);
      expect([a, b, c]).toEqual(['echo:one', 'echo:two', 'echo:three']);
      expect(view(id)?.bytesOut).toBeGreaterThan(0);
      if (ip === '::1') {
        // The largest datagram IPv6 carries (65,527 bytes) both ways: over IPv4 the limit is 20 bytes lower.
        const reply = await udpAsk('::1', port, 'x'.repeat(65_522));
        expect(reply.length).toBe(65_527);
        expect(view(id)).toMatchObject({ state: 'forwarding' });
      }
      await stopChild(server);
      await waitFor(() => view(id) === undefined, { what: `${id} removed` });
    });
  }

  it("relays a burst of 500 datagrams sent at once, not only what fits the link stream's own buffer", async () => {
    const port = await freePort('127.0.0.1');
    const server = await guestServer(testbed(), 'udp', '127.0.0.1', port);
    const id = `udp/127.0.0.1:${port}`;
    await waitFor(() => view(id)?.state === 'forwarding', { what: `${id} forwarding` });
    expect(await udpAsk('127.0.0.1', port, 'warm')).toBe('echo:warm');
    const s = dgram.createSocket('udp4');
    const replies = new Set<string>();
    s.on('message', (m) => replies.add(m.toString()));
    await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
    s.setRecvBufferSize(4 * 1024 * 1024);
    // 500 datagrams of 100 bytes: 50 KB, three times a stream's 16 KiB buffer.
    for (let i = 0; i < 500; i++) s.send(`${String(i).padStart(4, '0')}${'x'.repeat(96)}`, port, '127.0.0.1');
    // An observation of how many come back, not readiness: replies stop once the burst is through.
    await waitFor(() => replies.size === 500, { what: 'all 500 replies', timeoutMs: 10_000 }).catch(() => undefined);
    s.close();
    expect(replies.size).toBeGreaterThanOrEqual(490);
    await stopChild(server);
  });

  it('forwards a unix socket (host file mode 0600) and says why its channels fail while they do, until it is fixed', async () => {
    const tb = testbed();
    const id = `unix/${guestSocket()}`;
    const hostSocket = join(h.instanceDir, 'echo.sock');
    expect(view(id)?.hostAddrs).toEqual([hostSocket]);
    /** A connection through the forward until its first reply; the error when there is none. */
    const tryForward = async () => (await socketRoundTrip(hostSocket, 'ping').catch(() => '')) || view(id)?.error;

    // Nothing in the guest yet: the forward says so from the start, before any client tries, and its host socket is
    // closed meanwhile, so a client fails to connect as it would to the stopped service (not connect, then EOF).
    expect(view(id)).toMatchObject({
      state: 'error',
      error: expect.stringMatching(
        /guest socket .*echo\.sock does not exist.*; the host socket is closed until the service is back$/,
      ),
    });
    await waitFor(() => !existsSync(hostSocket), { what: 'the host socket closed while the guest service is down' });
    expect(await socketRoundTrip(hostSocket, 'ping').catch((err: NodeJS.ErrnoException) => err.code)).toBe('ENOENT');
    expect(view(id)?.state).toBe('error');

    // A socket only root may open, while the SSH user is tether-tb: the fix is named.
    const rootOnly = tb.spawn('socat', [`UNIX-LISTEN:${guestSocket()},fork,unlink-early,perm=0600`, 'EXEC:cat']);
    await waitFor(() => statSync(guestSocket(), { throwIfNoEntry: false })?.isSocket(), { what: 'guest socket' });
    // The service runs: the host socket is back (a client learns why from the forward, not from a missing file).
    await waitFor(() => statSync(hostSocket, { throwIfNoEntry: false })?.isSocket(), {
      what: 'the host socket open again while a guest service listens',
    });
    expect(statSync(hostSocket).mode & 0o777).toBe(0o600);
    await waitFor(
      async () => /may not connect .*owner root, group root, mode 600.*only root/.test((await tryForward()) ?? ''),
      {
        what: 'a guest socket the SSH user may not open reported',
        timeoutMs: 20_000,
      },
    );
    // Open to a group the SSH user is not in: joining it is the fix.
    chownSync(guestSocket(), 0, 1); // root:daemon
    chmodSync(guestSocket(), 0o660);
    await waitFor(
      async () =>
        /group daemon, mode 660; add tether-tb to group daemon .*usermod -aG daemon tether-tb/.test(
          (await tryForward()) ?? '',
        ),
      {
        what: 'the group that would give access named',
        timeoutMs: 20_000,
      },
    );
    await stopChild(rootOnly);

    // Fixed in the guest: the forward notices by itself (the guest agent says the socket changed), before any client
    // tries.
    const socat = tb.spawn('socat', [`UNIX-LISTEN:${guestSocket()},fork,unlink-early`, 'EXEC:cat'], { user: tb.user });
    await waitFor(() => view(id)?.state === 'forwarding', { what: 'the forward out of error', timeoutMs: 10_000 });
    expect(view(id)?.error).toBeNull();
    expect(await socketRoundTrip(hostSocket, 'through the socket')).toBe('through the socket');
    await stopChild(socat);
  });

  it("looks at a unix forward's guest socket when it is added and when SSH is back: its state is true without a client", async () => {
    const tb = testbed();
    const guestSock = join(tb.guestDir, 'added.sock');
    const hostSocket = join(h.instanceDir, 'added-h.sock');
    const added = await h.agent.addForward({ proto: 'unix', guestSocket: guestSock, hostSocket });
    expect(added).toMatchObject({
      state: 'error',
      error: expect.stringContaining(`guest socket ${guestSock} does not exist`),
    });
    // Kept in error (not taken back like a host address that cannot be bound): it forwards once the socket is there.
    expect(view(added.id)?.state).toBe('error');
    const socat = tb.spawn('socat', [`UNIX-LISTEN:${guestSock},fork,unlink-early`, 'EXEC:cat'], { user: tb.user });
    await waitFor(() => view(added.id)?.state === 'forwarding', {
      what: 'the added forward forwarding once its guest socket listens',
      timeoutMs: 30_000,
    });
    expect(view(added.id)?.error).toBeNull();
    expect(await socketRoundTrip(hostSocket, 'added')).toBe('added');

    // The service stops while SSH is down: once SSH is back the forward says so by itself. While SSH is down nothing
    // could serve a client, so the host socket is closed meanwhile.
    await tb.stopSshd();
    await waitFor(() => view(added.id)?.state === 'suspended', { what: 'the forward suspended' });
    await waitFor(() => !existsSync(hostSocket), { what: 'the host socket closed while SSH is down' });
    await stopChild(socat);
    await tb.startSshd();
    await waitFor(() => view(added.id)?.state !== 'suspended', { what: 'the forward back from suspended' });
    expect(view(added.id)).toMatchObject({
      state: 'error',
      error: expect.stringMatching(/guest socket .*added\.sock does not exist|nothing listens on guest socket/),
    });
    await h.agent.removeForward(added.id);
    await waitFor(() => h.agent.link.up, { what: 'the agent link up again', timeoutMs: 30_000 });
  });

  it("forwards a unix socket whose daemon starts late within seconds, on the guest agent's word, not a timer", async () => {
    const tb = testbed();
    const guestSock = join(tb.guestDir, 'late.sock');
    const hostSocket = join(h.instanceDir, 'late-h.sock');
    const sessions = () =>
      (readFileSync(join(tb.stateDir, 'sshd.log'), 'utf8').match(/Starting session:/g) ?? []).length;
    const added = await h.agent.addForward({
      proto: 'unix',
      guestSocket: guestSock,
      hostSocket,
    });
    expect(added.state).toBe('error');
    // Past the first look a forward makes by itself on a timer (after 5 s; the next would be 10 s later): with the
    // guest agent watching the path, none is made, and no SSH session (each timed look is one) is opened.
    const before = sessions();
    await new Promise((r) => setTimeout(r, 6_000));
    expect(sessions()).toBe(before);
    expect(view(added.id)?.state).toBe('error');
    const socat = tb.spawn('socat', [`UNIX-LISTEN:${guestSock},fork,unlink-early`, 'EXEC:cat'], { user: tb.user });
    await waitFor(() => view(added.id)?.state === 'forwarding', {
      what: 'the forward forwarding once the guest agent saw its socket appear',
      timeoutMs: 5_000,
    });
    expect(await socketRoundTrip(hostSocket, 'late')).toBe('late');
    await stopChild(socat);
    // Gone again: said as well, without a client, and the host socket goes with it.
    await waitFor(() => view(added.id)?.state === 'error', {
      what: 'the forward in error once the socket went',
      timeoutMs: 5_000,
    });
    await waitFor(() => !existsSync(hostSocket), { what: 'the host socket closed once the guest service went' });
    await h.agent.removeForward(added.id);
  });

  it('adds and removes a forward at runtime', async () => {
    const guestPort = await freePort();
    const hostPort = await freePort();
    const server = await guestServer(testbed(), 'tcp', '127.0.0.1', guestPort);
    const added = await h.agent.addForward({ proto: 'tcp', hostIP: '127.0.0.1', hostPort, guestPort });
    expect(added.state).toBe('forwarding');
    expect(added.source).toBe('runtime');
    expect((await roundTrip('127.0.0.1', hostPort, 'runtime')).toString()).toBe('runtime');
    await h.agent.removeForward(added.id);
    await waitFor(async () => (await connectError('127.0.0.1', hostPort)) === 'ECONNREFUSED', { what: 'closed' });
    await stopChild(server);
  });
});

// Through a port mapping (QEMU's hostfwd) the host cannot tell which port the guest's sshd listens on; sshd says so in
// $SSH_CONNECTION. Here it listens on a port other than 22, which the default rule would otherwise forward.
describe.skipIf(!canRunTestbed())('a guest sshd on another port', () => {
  const sshdPort = 20_000 + Math.floor(Math.random() * 5_000);
  const testbed = useTestbed({ guestSshPort: sshdPort });
  let h: Harness;

  beforeAll(async () => {
    h = await startAgent(testbed());
  });
  afterAll(async () => {
    await h?.stop();
  });

  it('is never forwarded, on either family', async () => {
    const view = (id: string) => h.agent.forwards().find((f) => f.id === id);
    for (const id of [`tcp/127.0.0.1:${sshdPort}`, `tcp/[::1]:${sshdPort}`]) {
      await waitFor(() => view(id)?.state === 'ignored', { what: `${id} ignored` });
      expect(view(id)?.error).toBe(`guest sshd port ${sshdPort} is never forwarded`);
    }
    expect(await connectError('127.0.0.1', sshdPort)).toBe('ECONNREFUSED');
  });
});
