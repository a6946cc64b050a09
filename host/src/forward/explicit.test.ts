// The operator's forwards (explicit.ts) through the engine: forward add and rm, static rules, what they refuse, how
// detected forwards of the same guest port give way to them and come back, and an add taken back when it binds nothing.
import { describe, expect, it } from 'vitest';
import {
  detectedWithConnection,
  dialed,
  echo,
  engineEachTest,
  fakeSsh,
  freePort,
  lines,
  logger,
  makeEngine,
  refusing,
  tcp,
  tried,
  triedWhile127Refuses,
  waitUntil,
} from '../../../test/helpers/forward-engine.js';
import { PortForward } from '../config/schema.js';
import { ForwardEngine } from './engine.js';

describe('ForwardEngine explicit forwards', () => {
  let engine: ForwardEngine;
  engineEachTest(() => engine);

  it("refuses to add a forward onto the host port of the VM's SSH, on any loopback or wildcard address", async () => {
    engine = makeEngine(4096, 2222);
    for (const hostIP of [undefined, '127.0.0.1', '::1', '0.0.0.0']) {
      await expect(engine.add({ proto: 'tcp', hostIP, hostPort: 2222, guestPort: 3000 })).rejects.toMatchObject({
        name: 'ForwardRefusedError',
        message:
          "host port 2222 is where this host reaches the VM's sshd (ssh.port): forward guest port 3000 to another host port",
      });
    }
    expect(engine.views()).toEqual([]);
  });

  it("refuses to add a socket forward onto one of the instance's own files, such as its control socket", async () => {
    engine = makeEngine();
    await expect(
      engine.add({ proto: 'unix', guestSocket: '/run/a.sock', hostSocket: '/tmp/./ha.sock' }),
    ).rejects.toMatchObject({
      name: 'ForwardRefusedError',
      message: "host socket /tmp/./ha.sock is instance tmp's control socket: pick another path",
    });
    expect(engine.views()).toEqual([]);
  });

  it('folds a detected listener into a forward added later for its port: one row, with its process', async () => {
    engine = makeEngine();
    const port = await freePort();
    await engine.setListeners([{ ...tcp('0.0.0.0', port), pid: 9, command: 'vite' }]);
    expect(engine.views().map((v) => v.source)).toEqual(['detected']);
    const added = await engine.add({ proto: 'tcp', hostPort: port, guestPort: port });
    expect(engine.views().map((v) => [v.id, v.source, v.process?.command])).toEqual([[added.id, 'runtime', 'vite']]);
    expect(await echo(port)).toBe('hi');
  });

  it('shows the process of the listener an added forward replaces under the same id (guest 127.0.0.1, same port)', async () => {
    engine = makeEngine();
    const port = await freePort();
    await engine.setListeners([{ ...tcp('127.0.0.1', port), pid: 11, command: 'python3 -m http.server' }]);
    const added = await engine.add({ proto: 'tcp', hostPort: port, guestPort: port });
    expect(added.id).toBe(`tcp/127.0.0.1:${port}`);
    expect(engine.views().map((v) => [v.id, v.source, v.process?.command])).toEqual([
      [added.id, 'runtime', 'python3 -m http.server'],
    ]);
  });

  it('keeps the host addresses an added forward does not take for the detected listener, and restores them all', async () => {
    engine = makeEngine();
    const port = await freePort();
    const detected = `tcp/0.0.0.0:${port}`;
    await engine.setListeners([{ ...tcp('0.0.0.0', port), pid: 9, command: 'vite' }]);
    const added = await engine.add({ proto: 'tcp', hostIP: '127.0.0.1', hostPort: port, guestPort: port });
    expect(engine.views().map((v) => [v.id, v.source, v.hostAddrs, v.process?.command])).toEqual([
      [detected, 'detected', [`[::1]:${port}`], 'vite'],
      [added.id, 'runtime', [`127.0.0.1:${port}`], 'vite'],
    ]);
    expect(await echo(port, '::1')).toBe('hi');
    expect(await echo(port)).toBe('hi');
    await engine.remove(added.id);
    expect(engine.views().map((v) => [v.id, v.source, v.hostAddrs])).toEqual([
      [detected, 'detected', [`127.0.0.1:${port}`, `[::1]:${port}`]],
    ]);
    expect(await echo(port)).toBe('hi');
  });

  it('keeps the other host address for a listener on 127.0.0.1 when an added forward takes 127.0.0.1', async () => {
    engine = makeEngine();
    const port = await freePort();
    const detected = `tcp/127.0.0.1:${port}`;
    await engine.setListeners([tcp('127.0.0.1', port)]);
    const added = await engine.add({ proto: 'tcp', hostIP: '127.0.0.1', hostPort: port, guestPort: port });
    expect(added.id).toBe(`tcp/127.0.0.1:${port}->127.0.0.1:${port}`);
    expect(engine.views().map((v) => [v.id, v.source, v.hostAddrs])).toEqual([
      [detected, 'detected', [`[::1]:${port}`]],
      [added.id, 'runtime', [`127.0.0.1:${port}`]],
    ]);
    expect(await echo(port, '::1')).toBe('hi');
    await engine.remove(added.id);
    expect(engine.views().map((v) => [v.id, v.source, v.hostAddrs])).toEqual([
      [detected, 'detected', [`127.0.0.1:${port}`, `[::1]:${port}`]],
    ]);
  });

  it('keeps both detected listeners of a port listed when an added forward takes one host address', async () => {
    engine = makeEngine();
    const port = await freePort();
    await engine.setListeners([tcp('0.0.0.0', port), { ...tcp('::', port), pid: 43 }]);
    const added = await engine.add({ proto: 'tcp', hostIP: '::1', hostPort: port, guestPort: port });
    expect(engine.views().map((v) => [v.id, v.source, v.hostAddrs])).toEqual([
      [`tcp/[::]:${port}`, 'detected', [`127.0.0.1:${port}`]],
      [`tcp/0.0.0.0:${port}`, 'detected', [`127.0.0.1:${port}`]],
      [added.id, 'runtime', [`[::1]:${port}`]],
    ]);
    expect(await echo(port)).toBe('hi');
    expect(await echo(port, '::1')).toBe('hi');
  });

  it('refuses an added forward on a host address another added forward holds', async () => {
    engine = makeEngine();
    const hostPort = await freePort();
    const first = await engine.add({ proto: 'tcp', hostPort, guestPort: 8123 });
    await expect(engine.add({ proto: 'tcp', hostPort, guestPort: 8125 })).rejects.toThrow(
      `host 127.0.0.1:${hostPort} is already used by forward ${first.id} (runtime); remove it first: tether forward rm tmp '${first.id}'`,
    );
    expect(engine.views().map((v) => v.id)).toEqual([first.id]);
  });

  it('turns a removed detected forward into ignored while its listener exists', async () => {
    engine = makeEngine();
    const port = await freePort();
    await engine.setListeners([tcp('127.0.0.1', port)]);
    await engine.remove(`tcp/127.0.0.1:${port}`);
    expect(engine.view(`tcp/127.0.0.1:${port}`)).toMatchObject({ state: 'ignored', hostAddrs: [], cause: 'removed' });
    await expect(echo(port)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
    await expect(engine.remove('tcp/127.0.0.1:1')).rejects.toThrow(/no forward with id tcp\/127.0.0.1:1/);
  });

  it('keeps a removed port ignored when its server comes back on another address, and keeps an earlier reason', async () => {
    engine = makeEngine();
    const port = await freePort();
    await engine.setListeners([tcp('::', port)]);
    await engine.remove(`tcp/[::]:${port}`);
    await engine.applyDelta({ added: [tcp('127.0.0.1', port)], removed: [tcp('::', port)] });
    expect(engine.view(`tcp/127.0.0.1:${port}`)).toMatchObject({ state: 'ignored', error: /removed by the operator/ });
    await expect(echo(port)).rejects.toMatchObject({ code: 'ECONNREFUSED' });

    // The guest's sshd port: removing it again says nothing new and keeps why it is ignored.
    await engine.setListeners([tcp('127.0.0.1', 22)]);
    const before = engine.view('tcp/127.0.0.1:22')?.error;
    expect(before).toMatch(/sshd/);
    await engine.remove('tcp/127.0.0.1:22');
    expect(engine.view('tcp/127.0.0.1:22')).toMatchObject({ error: before, cause: 'rule' });
  });

  it('adds a forward to a guest address other than its loopback, as ssh -L HOSTPORT:HOST:PORT does', async () => {
    engine = makeEngine();
    const [guestPort, hostPort] = [await freePort(), await freePort()];
    const server = { ...tcp('127.0.0.53', guestPort), pid: 53, command: 'systemd-resolved' };
    await engine.setListeners([server]);
    // The default rule ignores a listener on 127.0.0.53; an added forward names it.
    expect(engine.view(`tcp/127.0.0.53:${guestPort}`)?.state).toBe('ignored');
    const added = await engine.add({ proto: 'tcp', hostPort, guestIP: '127.0.0.53', guestPort });
    expect(added).toMatchObject({
      id: `tcp/127.0.0.53:${guestPort}->${hostPort}`,
      guestAddr: `127.0.0.53:${guestPort}`,
      state: 'forwarding',
      process: { pid: 53, command: 'systemd-resolved' },
    });
    tried.length = 0;
    expect(await echo(hostPort)).toBe('hi');
    expect(tried).toEqual(['127.0.0.53']);
    // The ignored row no longer suggests the forward add that was made: it says where the listener is served.
    expect(engine.view(`tcp/127.0.0.53:${guestPort}`)).toMatchObject({
      state: 'ignored',
      error: `served on host 127.0.0.1:${hostPort}, [::1]:${hostPort} by forward ${added.id} (forwarding)`,
    });
    await engine.remove(added.id);
    expect(engine.view(`tcp/127.0.0.53:${guestPort}`)?.error).toMatch(
      new RegExp(`or run \`tether forward add [^ ]+ ${guestPort}:127\\.0\\.0\\.53:${guestPort}\`$`),
    );
  });

  it('says first that the operator removed a detected listener that an added forward serves elsewhere', async () => {
    engine = makeEngine();
    const [guestPort, hostPort] = [await freePort(), await freePort()];
    await engine.setListeners([tcp('127.0.0.1', guestPort)]);
    const added = await engine.add({ proto: 'tcp', hostPort, guestPort });
    await engine.remove(`tcp/127.0.0.1:${guestPort}`);
    expect(engine.view(`tcp/127.0.0.1:${guestPort}`)).toMatchObject({
      state: 'ignored',
      error: `removed by the operator (tether forward rm); served on host 127.0.0.1:${hostPort}, [::1]:${hostPort} by forward ${added.id} (forwarding)`,
    });
  });

  it('keeps a runtime forward to another host port beside the detected one, and restores a replaced one', async () => {
    engine = makeEngine();
    const [guest, other] = [await freePort(), await freePort()];
    await engine.setListeners([tcp('127.0.0.1', guest)]);
    const extra = await engine.add({ proto: 'tcp', hostPort: other, guestPort: guest });
    expect(extra.id).toBe(`tcp/127.0.0.1:${guest}->${other}`);
    expect(engine.view(`tcp/127.0.0.1:${guest}`)?.state).toBe('forwarding');
    expect(await echo(other)).toBe('hi');
    await engine.remove(extra.id);
    await expect(echo(other)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
    expect(await echo(guest)).toBe('hi');

    const same = await engine.add({ proto: 'tcp', hostPort: guest, guestPort: guest });
    expect(same).toMatchObject({ id: `tcp/127.0.0.1:${guest}`, source: 'runtime' });
    await engine.remove(same.id);
    expect(engine.view(`tcp/127.0.0.1:${guest}`)).toMatchObject({ source: 'detected', state: 'forwarding' });
    expect(await echo(guest)).toBe('hi');
  });

  it('shows on an added forward to another host port the process of the guest listener it reaches', async () => {
    engine = makeEngine();
    const [guestPort, hostPort] = [await freePort(), await freePort()];
    const server = { ...tcp('0.0.0.0', guestPort), pid: 77, command: 'nginx: master process' };
    await engine.setListeners([server]);
    const added = await engine.add({ proto: 'tcp', hostPort, guestPort });
    expect(added).toMatchObject({
      guestAddr: `127.0.0.1:${guestPort}`,
      process: { pid: 77, command: 'nginx: master process' },
    });
    // Its own detected row keeps the process too.
    expect(engine.view(`tcp/0.0.0.0:${guestPort}`)?.process).toEqual({ pid: 77, command: 'nginx: master process' });
    await engine.applyDelta({ added: [], removed: [server] });
    expect(engine.view(added.id)?.process).toBeNull();
    // A listener on another guest address (not one 127.0.0.1 reaches) is not its process.
    await engine.applyDelta({ added: [{ ...tcp('10.0.2.15', guestPort), pid: 78, command: 'other' }], removed: [] });
    expect(engine.view(added.id)?.process).toBeNull();
    await engine.applyDelta({
      added: [{ ...tcp('127.0.0.1', guestPort), pid: 79, command: 'dev server' }],
      removed: [],
    });
    expect(engine.view(added.id)?.process).toEqual({ pid: 79, command: 'dev server' });
  });

  it('forwards a port removed with forward rm again when a forward of it is added, without a second row', async () => {
    engine = makeEngine();
    const port = await freePort();
    await engine.setListeners([tcp('0.0.0.0', port)]);
    await engine.remove(`tcp/0.0.0.0:${port}`);
    expect(engine.view(`tcp/0.0.0.0:${port}`)).toMatchObject({ state: 'ignored', error: /removed by the operator/ });
    const added = await engine.add({ proto: 'tcp', hostPort: port, guestPort: port });
    expect(added.state).toBe('forwarding');
    expect(await echo(port)).toBe('hi');
    // The detected listener is served by the added forward: no ignored row is left beside it.
    expect(engine.views().map((v) => [v.id, v.state])).toEqual([[added.id, 'forwarding']]);
    // Removing the added forward leaves the port forwarded as detected, as before the rm.
    await engine.remove(added.id);
    expect(engine.view(`tcp/0.0.0.0:${port}`)).toMatchObject({ source: 'detected', state: 'forwarding' });
    expect(await echo(port)).toBe('hi');
  });

  it('leaves a port removed with forward rm removed when a forward of it to another host port is added', async () => {
    engine = makeEngine();
    const [port, other] = [await freePort(), await freePort()];
    await engine.setListeners([tcp('0.0.0.0', port)]);
    await engine.remove(`tcp/0.0.0.0:${port}`);
    const added = await engine.add({ proto: 'tcp', hostPort: other, guestPort: port });
    expect(added.state).toBe('forwarding');
    expect(await echo(other)).toBe('hi');
    expect(engine.view(`tcp/0.0.0.0:${port}`)).toMatchObject({ state: 'ignored', error: /removed by the operator/ });
    await expect(echo(port)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
  });

  it('counts on, on a forward made anew by an add, the connections and bytes it had', async () => {
    engine = makeEngine();
    const { port, id, held } = await detectedWithConnection(engine);
    await waitUntil(() => engine.view(id)?.connections === 1);
    // An added 127.0.0.1 forward of the port takes that address: the detected forward is made anew on the rest.
    const added = await engine.add({ proto: 'tcp', hostIP: '127.0.0.1', hostPort: port, guestPort: port });
    expect(added.state).toBe('forwarding');
    expect(engine.view(id)?.connections).toBe(1);
    held.destroy();
    await waitUntil(() => engine.view(id)?.connections === 0);
  });

  it('serves one guest port per host port: an explicit forward to another takes it, the detected one waits', async () => {
    engine = makeEngine();
    const port = await freePort();
    const detected = `tcp/0.0.0.0:${port}`;
    await engine.setListeners([tcp('0.0.0.0', port)]);
    const extra = await engine.add({ proto: 'tcp', hostIP: '127.0.0.1', hostPort: port, guestPort: 80 });
    expect(extra.state).toBe('forwarding');
    expect(engine.view(detected)).toMatchObject({
      state: 'conflict',
      error: `host 127.0.0.1:${port} is taken by forward ${extra.id} (guest 127.0.0.1:80)`,
      heldBy: { kind: 'forward', id: extra.id, address: `127.0.0.1:${port}` },
    });
    expect(await echo(port)).toBe('hi');
    expect(dialed.at(-1)).toBe(80);
    await engine.remove(extra.id);
    expect(engine.view(detected)).toMatchObject({ state: 'forwarding', error: null });
    expect(await echo(port)).toBe('hi');
    expect(dialed.at(-1)).toBe(port);
  });

  it("sends a forward added by port to the guest's ::1 when its 127.0.0.1 refuses (a server bound to localhost)", async () => {
    engine = makeEngine();
    const hostPort = await freePort();
    const view = await engine.add({ proto: 'tcp', hostIP: '127.0.0.1', hostPort, guestPort: 80 });
    expect(view.state).toBe('forwarding');
    refusing.add('127.0.0.1');
    try {
      expect(await echo(hostPort)).toBe('hi');
    } finally {
      refusing.clear();
    }
  });

  it('points a forward added by port at ::1 while its only listener is there, and shows that address', async () => {
    engine = makeEngine();
    const port = await freePort();
    const id = `tcp/127.0.0.1:${port}`;
    const changes: string[] = [];
    engine.on('change', (v: { id: string; guestAddr: string }) => {
      if (v.id === id) changes.push(v.guestAddr);
    });
    const view = await engine.add({ proto: 'tcp', hostPort: port, guestPort: port });
    expect(view).toMatchObject({ id, guestAddr: `127.0.0.1:${port}` });
    await engine.applyDelta({ added: [tcp('::1', port)], removed: [] });
    expect(engine.view(id)).toMatchObject({ guestAddr: `[::1]:${port}`, process: { pid: 42 } });
    expect(changes).toContain(`[::1]:${port}`);
    expect(await triedWhile127Refuses(port)).toEqual(['::1']);
    // Listeners on both loopbacks: the address asked for.
    await engine.applyDelta({ added: [tcp('127.0.0.1', port)], removed: [] });
    expect(engine.view(id)?.guestAddr).toBe(`127.0.0.1:${port}`);
    await engine.applyDelta({ added: [], removed: [tcp('127.0.0.1', port)] });
    expect(engine.view(id)?.guestAddr).toBe(`[::1]:${port}`);
    await engine.applyDelta({ added: [], removed: [tcp('::1', port)] });
    expect(engine.view(id)).toMatchObject({ guestAddr: `127.0.0.1:${port}`, process: null });
  });

  it('points a forward added to another host port at ::1 when its guest port listens only there', async () => {
    engine = makeEngine();
    const [guestPort, hostPort] = [await freePort(), await freePort()];
    // The listener first (its own detected forward on host guestPort), then the forward to another host port.
    await engine.setListeners([tcp('::1', guestPort)]);
    const view = await engine.add({ proto: 'tcp', hostPort, guestPort });
    expect(view.guestAddr).toBe(`[::1]:${guestPort}`);
    expect(await triedWhile127Refuses(hostPort)).toEqual(['::1']);
    // The server moves to 0.0.0.0 (reachable on 127.0.0.1): back to the address asked for.
    await engine.applyDelta({ added: [tcp('0.0.0.0', guestPort)], removed: [tcp('::1', guestPort)] });
    expect(engine.view(view.id)?.guestAddr).toBe(`127.0.0.1:${guestPort}`);
  });

  it('takes back a forward add that binds nothing, and says why', async () => {
    engine = makeEngine();
    const hostPort = await freePort();
    // 192.0.2.1 (TEST-NET-1) is no address of this host: only bound, never sent to.
    await expect(engine.add({ proto: 'tcp', hostIP: '192.0.2.1', hostPort, guestPort: 80 })).rejects.toThrow(
      new RegExp(
        `^forward tcp/127.0.0.1:80->${hostPort} not added: cannot listen on 192.0.2.1:${hostPort}: .*EADDRNOTAVAIL[^;]*$`,
      ),
    );
    expect(engine.views()).toEqual([]);
    // A forward that never was has no state lines: only the refusal (the control API logs it) says anything.
    expect(lines.filter((l) => l.forward === `tcp/127.0.0.1:80->${hostPort}`)).toEqual([]);
  });

  it('lists a static rule to another host port and its guest listener as one forward, carrying the process', async () => {
    const [guestPort, hostPort] = [await freePort(), await freePort()];
    engine = new ForwardEngine({
      ssh: fakeSsh,
      portForwards: [PortForward.parse({ guestPort, hostPort, static: true })],
      maxForwards: 10,
      instanceDir: '/tmp',
      logger,
    });
    await engine.start();
    await engine.setListeners([{ ...tcp('127.0.0.1', guestPort), pid: 7, command: 'node server.js' }]);
    expect(engine.views().map((v) => [v.id, v.source, v.state, v.process?.command])).toEqual([
      [`tcp/127.0.0.1:${guestPort}->${hostPort}`, 'static', 'forwarding', 'node server.js'],
    ]);
    // The server stops: the static forward stays, without its process.
    await engine.applyDelta({ added: [], removed: [tcp('127.0.0.1', guestPort)] });
    expect(engine.view(`tcp/127.0.0.1:${guestPort}->${hostPort}`)?.process).toBeNull();
    await engine.applyDelta({
      added: [{ ...tcp('127.0.0.1', guestPort), pid: 8, command: 'node server.js' }],
      removed: [],
    });
    expect(engine.view(`tcp/127.0.0.1:${guestPort}->${hostPort}`)?.process).toEqual({
      pid: 8,
      command: 'node server.js',
    });
    // Removing the static forward stops its host port: detected through the same rule, the listener would take it
    // back, so it is left ignored as a removed detected forward is, until a forward of its port is added.
    await engine.remove(`tcp/127.0.0.1:${guestPort}->${hostPort}`);
    expect(engine.views().map((v) => [v.id, v.source, v.state, v.hostAddrs, v.error])).toEqual([
      [`tcp/127.0.0.1:${guestPort}`, 'detected', 'ignored', [], 'removed by the operator'],
    ]);
    await expect(echo(hostPort)).rejects.toThrow(/ECONNREFUSED/);
    const added = await engine.add({ proto: 'tcp', hostPort, guestPort });
    expect(engine.views().map((v) => [v.id, v.state])).toEqual([[added.id, 'forwarding']]);
  });

  it('lists a static rule with a host address and its guest listener as one forward', async () => {
    const port = await freePort();
    engine = new ForwardEngine({
      ssh: fakeSsh,
      portForwards: [PortForward.parse({ guestPort: port, hostIP: '127.0.0.1', static: true })],
      maxForwards: 10,
      instanceDir: '/tmp',
      logger,
    });
    await engine.start();
    await engine.setListeners([tcp('127.0.0.1', port)]);
    expect(engine.views().map((v) => [v.id, v.source, v.state])).toEqual([
      [`tcp/127.0.0.1:${port}`, 'static', 'forwarding'],
    ]);
  });

  it('forwards one guest port on two host addresses as two forwards', async () => {
    engine = makeEngine();
    const hostPort = await freePort();
    const a = await engine.add({ proto: 'tcp', hostIP: '127.0.0.1', hostPort, guestPort: 80 });
    const b = await engine.add({ proto: 'tcp', hostIP: '127.0.0.2', hostPort, guestPort: 80 });
    // The second one's id names its host address: the plain one is the first's.
    expect([a.id, b.id]).toEqual([`tcp/127.0.0.1:80->${hostPort}`, `tcp/127.0.0.1:80->127.0.0.2:${hostPort}`]);
    expect(engine.views().map((v) => v.state)).toEqual(['forwarding', 'forwarding']);
    expect(await echo(hostPort, '127.0.0.2')).toBe('hi');
    await engine.remove(a.id);
    await expect(echo(hostPort)).rejects.toMatchObject({ code: 'ECONNREFUSED' });
    expect(await echo(hostPort, '127.0.0.2')).toBe('hi');
  });

  it('gives an added wildcard host address to the explicit forward; the detected one keeps what does not overlap', async () => {
    engine = makeEngine();
    const port = await freePort();
    await engine.setListeners([tcp('0.0.0.0', port)]);
    const wide = await engine.add({ proto: 'tcp', hostIP: '0.0.0.0', hostPort: port, guestPort: port });
    expect(wide).toMatchObject({ state: 'forwarding', hostAddrs: [`0.0.0.0:${port}`] });
    // The listener is served on 127.0.0.1 by the explicit forward; its own forward keeps [::1].
    expect(engine.view(`tcp/0.0.0.0:${port}`)).toMatchObject({ state: 'forwarding', hostAddrs: [`[::1]:${port}`] });
    expect(await echo(port)).toBe('hi');
    await engine.remove(wide.id);
    expect(engine.view(`tcp/0.0.0.0:${port}`)).toMatchObject({
      state: 'forwarding',
      hostAddrs: [`127.0.0.1:${port}`, `[::1]:${port}`],
    });
  });

  it('makes a detected forward of another guest port wait for an added wildcard, naming it, and take the port back at once', async () => {
    engine = new ForwardEngine({
      ...{ ssh: fakeSsh, portForwards: [], maxForwards: 10, instanceDir: '/tmp', logger },
      retryInitialMs: 60_000,
      retryMaxMs: 60_000,
    });
    const [port, other] = [await freePort(), await freePort()];
    const detected = `tcp/127.0.0.1:${port}`;
    await engine.setListeners([tcp('127.0.0.1', port)]);
    const wide = await engine.add({ proto: 'tcp', hostIP: '0.0.0.0', hostPort: port, guestPort: other });
    expect(wide.state).toBe('forwarding');
    expect(engine.view(detected)).toMatchObject({
      state: 'conflict',
      error: expect.stringContaining(
        `host address 127.0.0.1:${port} is in use by tether's forward ${wide.id} (on 0.0.0.0:${port})`,
      ),
      heldBy: { kind: 'forward', id: wide.id, address: `0.0.0.0:${port}` },
    });
    // Removed: the detected forward binds at once, not at its next retry a minute later.
    await engine.remove(wide.id);
    await expect.poll(() => engine.view(detected)?.state).toBe('forwarding');
  });

  it('keeps a listener forwarded on a wildcard by a rule in conflict under a narrower added forward, naming it', async () => {
    const port = await freePort();
    engine = new ForwardEngine({
      ...{ ssh: fakeSsh, maxForwards: 10, instanceDir: '/tmp', logger },
      portForwards: [PortForward.parse({ guestPort: port, hostIP: '0.0.0.0' })],
    });
    await engine.setListeners([tcp('127.0.0.1', port)]);
    const detected = `tcp/127.0.0.1:${port}`;
    expect(engine.view(detected)).toMatchObject({ state: 'forwarding', hostAddrs: [`0.0.0.0:${port}`] });
    const narrow = await engine.add({ proto: 'tcp', hostIP: '127.0.0.1', hostPort: port, guestPort: port });
    expect(narrow).toMatchObject({ state: 'forwarding', hostAddrs: [`127.0.0.1:${port}`] });
    // 127.0.0.1 does not take what 0.0.0.0 took (other interfaces): the rule's forward says why it waits.
    expect(engine.view(detected)).toMatchObject({
      state: 'conflict',
      error: expect.stringContaining(`in use by tether's forward ${narrow.id}`),
      heldBy: { kind: 'forward', id: narrow.id, address: `127.0.0.1:${port}` },
    });
  });

  it('keeps a displaced detected forward at maxForwards: its slot does not go to a capped listener', async () => {
    engine = makeEngine(2);
    const [a, b, c, other] = [await freePort(), await freePort(), await freePort(), await freePort()];
    await engine.setListeners([tcp('127.0.0.1', a), tcp('127.0.0.1', b), tcp('127.0.0.1', c)]);
    const before = engine.views().map((v) => v.id);
    expect(before).toHaveLength(2);
    const capped = [a, b, c].map((p) => `tcp/127.0.0.1:${p}`).find((id) => !before.includes(id));
    const first = before.find((id) => id === `tcp/127.0.0.1:${a}`) ?? before[0];
    const firstPort = Number(first.split(':').pop());
    await engine.add({ proto: 'tcp', hostIP: '0.0.0.0', hostPort: firstPort, guestPort: other });
    const ids = engine.views().map((v) => v.id);
    expect(ids).toContain(first);
    expect(ids).not.toContain(capped);
    expect(engine.view(first)).toMatchObject({
      state: 'conflict',
      hostAddrs: [`127.0.0.1:${firstPort}`, `[::1]:${firstPort}`],
    });
  });

  it('refuses an added forward whose host address overlaps another added one, naming both addresses', async () => {
    engine = makeEngine();
    const port = await freePort();
    const wide = await engine.add({ proto: 'tcp', hostIP: '::', hostPort: port, guestPort: 8010 });
    expect(wide.state).toBe('forwarding');
    await expect(engine.add({ proto: 'tcp', hostPort: port, guestPort: 8011 })).rejects.toThrow(
      `host 0.0.0.0:${port} (overlapping 127.0.0.1:${port}) is already used by forward ${wide.id} (runtime)`,
    );
    await engine.remove(wide.id);
    const narrow = await engine.add({ proto: 'tcp', hostIP: '127.0.0.1', hostPort: port, guestPort: 8011 });
    await expect(engine.add({ proto: 'tcp', hostIP: '0.0.0.0', hostPort: port, guestPort: 8010 })).rejects.toThrow(
      `host 127.0.0.1:${port} (overlapping 0.0.0.0:${port}) is already used by forward ${narrow.id} (runtime)`,
    );
    expect(engine.views().map((v) => v.id)).toEqual([narrow.id]);
  });
});
