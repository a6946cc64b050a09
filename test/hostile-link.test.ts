// The host agent against a hostile guest agent, end to end on the testbed: a stand-in (hostile-guest.cjs) serves the
// configured agent socket in the guest and sends garbage, oversized frames, 200,000-deep msgpack nesting, a
// 1,000,000-port snapshot, invalid addresses and ports, floods of UDP replies and of events the host does not
// handle. Each case must leave a `link` (or `forward`) log line naming what was wrong, keep the caps, and leave the
// host agent serving: a static forward keeps working throughout, and the real tether-guest brings detected forwards
// back at the end.
import type { ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { guestServer, type Harness, roundTrip, startAgent, stopChild } from './helpers/forward-fixture.js';
import { canRunTestbed, type Testbed, useTestbed } from './helpers/testbed.js';
import { freePort, waitFor } from './helpers/wait.js';

const HOSTILE_GUEST = fileURLToPath(new URL('./helpers/hostile-guest.cjs', import.meta.url));
const GUEST_BUNDLE = fileURLToPath(new URL('../build/guest/tether-guest.cjs', import.meta.url));
const MSGPACKR = createRequire(fileURLToPath(new URL('../protocol/package.json', import.meta.url))).resolve('msgpackr');
const MAX_FORWARDS = 50;
const BROKEN_RETRY_MAX_MS = 3_000;

interface LogLine {
  component?: string;
  level: number;
  msg: string;
  [key: string]: unknown;
}

type Mode = { name: string } & Record<string, unknown>;

describe.skipIf(!canRunTestbed())('host agent against a hostile guest agent', () => {
  const testbed = useTestbed();
  let tb: Testbed;
  let h: Harness;
  let hostile: ChildProcess;
  let hostileOut = '';
  let staticPort: number;
  const children: ChildProcess[] = [];

  const logFile = () => join(h.instanceDir, 'logs', 'current.log');
  function logLines(): LogLine[] {
    if (!existsSync(logFile())) return [];
    return readFileSync(logFile(), 'utf8')
      .split('\n')
      .filter((l) => l.trim() !== '')
      .map((l) => JSON.parse(l) as LogLine);
  }

  /** Switches the stand-in to `mode` (dropping its connections) and waits for a log line after the switch. */
  async function misbehave(mode: Mode, component: string, pattern: RegExp): Promise<LogLine> {
    const mark = logLines().length;
    const acks = hostileOut.split(`mode ${mode.name}\n`).length;
    hostile.stdin!.write(`${JSON.stringify(mode)}\n`);
    await waitFor(() => hostileOut.split(`mode ${mode.name}\n`).length > acks, { what: `mode ${mode.name}` });
    return waitFor(
      () =>
        logLines()
          .slice(mark)
          .find((l) => l.component === component && pattern.test(l.msg)),
      { what: `a ${component} log line matching ${pattern} after mode ${mode.name}`, timeoutMs: 30_000 },
    );
  }

  /** The host agent still answers, and the static forward still carries data. */
  async function stillServing(): Promise<void> {
    const status = h.agent.status();
    expect(status.name).toBe('test');
    expect(['ready', 'degraded']).toContain(status.state);
    const payload = `still serving ${Date.now()}`;
    expect((await roundTrip('127.0.0.1', staticPort, payload)).toString()).toBe(payload);
  }

  /**
   * The back-off `warning` is logged (at or after log line `warnedFrom`), and links from then on (counted from line
   * `mark`) are at least the 2 s of the ordinary cap apart, where a link that had been up was retried after 100 ms.
   */
  async function expectBackoff(warnedFrom: number, mark: number, warning: RegExp): Promise<void> {
    await waitFor(
      () =>
        logLines()
          .slice(warnedFrom)
          .find((l) => warning.test(l.msg)),
      {
        what: 'the back-off warning',
        timeoutMs: 30_000,
      },
    );
    const ups = () =>
      logLines()
        .slice(mark)
        .filter((l) => /agent link up/.test(l.msg));
    await waitFor(() => ups().length >= 5, { what: 'five links', timeoutMs: 30_000 });
    const times = ups().map((l) => Date.parse(String(l.time)));
    expect(times[4] - times[3]).toBeGreaterThanOrEqual(2_000);
    await stillServing();
  }

  beforeAll(async () => {
    tb = testbed();
    staticPort = await freePort();
    children.push(await guestServer(tb, 'tcp', '127.0.0.1', staticPort));
    const socket = join(tb.guestDir, 'agent.sock');
    hostile = tb.spawn('node', [HOSTILE_GUEST, socket, MSGPACKR], { user: tb.user });
    children.push(hostile);
    hostile.stdout!.setEncoding('utf8').on('data', (d: string) => {
      hostileOut += d;
    });
    hostile.stderr!.setEncoding('utf8').on('data', (d: string) => {
      hostileOut += d;
    });
    await waitFor(() => hostileOut.includes('listening'), { what: 'the hostile guest agent listening' });
    h = await startAgent(
      tb,
      {
        guestAgent: { socket, installDir: join(tb.guestDir, 'install'), provision: 'never' },
        maxForwards: MAX_FORWARDS,
        portForwards: [{ guestPort: staticPort, static: true }],
      },
      // Most cases here break the protocol, one after another: retries back off to 3 s, not 30 s.
      { link: { brokenRetryMaxMs: BROKEN_RETRY_MAX_MS } },
    );
  });

  afterAll(async () => {
    await h?.stop();
    for (const child of children) await stopChild(child);
  });

  it('boots against the stand-in and serves the static forward', async () => {
    expect(h.agent.link.info?.version).toBe('0.0.0-hostile');
    await stillServing();
  });

  it.each<[string, Mode, RegExp]>([
    [
      'random bytes',
      { name: 'random-stream' },
      /frame of 2058330346 bytes exceeds the maximum of 32768 bytes \(before hello\)/,
    ],
    [
      'a plausible header with garbage behind it',
      { name: 'garbage' },
      /undecodable msgpack payload \(4096 bytes\): Data read, but end of buffer not reached/,
    ],
    [
      'an oversized frame header',
      { name: 'oversized-header' },
      /frame of 4294967280 bytes exceeds the maximum of 32768 bytes \(before hello\)/,
    ],
    [
      '200,000-deep msgpack nesting',
      { name: 'deep-nesting' },
      /frame of 200001 bytes exceeds the maximum of 32768 bytes \(before hello\)/,
    ],
    ['an event before hello', { name: 'no-hello' }, /expected hello first, got evt/],
    [
      'a 16 MB map of 2,000,000 distinct keys after hello (3.9 s and 1.2 GB to decode without the budget)',
      { name: 'key-bomb', keys: 2_000_000 },
      /msgpack payload of 16000005 bytes refused before decoding: a map of 2000000 entries \(at most 32\)/,
    ],
    [
      'another protocol version',
      { name: 'wrong-version' },
      /protocol version mismatch: this side \(tether\/[\d.]+\) speaks 1, tether-guest\/9\.9\.9 speaks 999/,
    ],
  ])('closes the link on %s with the reason in the log', async (_what, mode, pattern) => {
    const line = await misbehave(mode, 'link', pattern);
    expect(line.level).toBeGreaterThanOrEqual(40); // warn or worse
    await stillServing();
  });

  const good = { proto: 'tcp', family: 4, ip: '127.0.0.1', port: 4000, pid: null, command: null };
  const badListeners: [string, Record<string, unknown>, string][] = [
    ['negative port', { port: -1 }, 'port'],
    ['port 0', { port: 0 }, 'port'],
    ['port 70000', { port: 70_000 }, 'port'],
    ['port 2^40', { port: 2 ** 40 }, 'port'],
    ['fractional port', { port: 80.5 }, 'port'],
    ['NaN port', { port: Number.NaN }, 'port'],
    ['a name for an address', { ip: 'not-an-ip' }, 'ip'],
    ['an address out of range', { ip: '999.1.1.1' }, 'ip'],
    ['shell text for an address', { ip: '127.0.0.1; rm -rf /' }, 'ip'],
    ['a 100,000-byte address', { ip: '1'.repeat(100_000) }, 'ip'],
    ['family 5', { family: 5 }, 'family'],
    ['protocol sctp', { proto: 'sctp' }, 'proto'],
    ['a negative pid', { pid: -7 }, 'pid'],
    ['a 10,000-byte command', { command: 'x'.repeat(10_000) }, 'command'],
  ];

  it.each(badListeners)('refuses a snapshot with %s, naming the field', async (_what, patch, field) => {
    const listener = { ...good, ...patch };
    const line = await misbehave(
      { name: 'bad-snapshot', listener },
      'link',
      new RegExp(`agent link setup failed: invalid result of ports\\.subscribe: field listeners\\.0\\.${field}: `),
    );
    expect(line.msg).toContain('(got '); // the offending value, previewed
    expect(line.msg.length).toBeLessThan(1000); // the reason, not the payload
    await stillServing();
  });

  it.each(badListeners.filter((_, i) => i % 3 === 0))(
    'closes the link on a delta with %s, naming the field',
    async (_what, patch, field) => {
      const listener = { ...good, ...patch };
      await misbehave(
        { name: 'bad-delta', listener },
        'link',
        new RegExp(`agent link down: invalid event ports\\.delta: field added\\.0\\.${field}: `),
      );
      await stillServing();
    },
  );

  it('links less often to an agent that breaks the protocol on every link, and says so', async () => {
    const mark = logLines().length;
    await misbehave({ name: 'bad-delta', listener: { ...good, port: -1 } }, 'link', /agent link down: invalid event/);
    // Said once per streak of broken links (the cases above may have begun this one).
    await expectBackoff(0, mark, /broke the protocol on 3 links in a row; trying it less often, up to every 3 s/);
  });

  it('links less often to an agent that ends every link right after it comes up, and says so', async () => {
    // A streak starts from a link that lasted: a healthy one, up for longer than a brief link.
    const upHealthy = await misbehave({ name: 'healthy' }, 'link', /agent link up/);
    const upAt = Date.parse(String(upHealthy.time));
    await waitFor(() => Date.now() - upAt > 2_500 && h.agent.status().link.up, { what: 'a link up for 2.5 s' });
    const mark = logLines().length;
    await misbehave({ name: 'drop-after-subscribe' }, 'link', /agent link down/);
    await expectBackoff(mark, mark, /ended 3 links in a row within 2 s of their start; trying it less often/);
  });

  it('rejects a 1,000,000-port snapshot at the frame limit before buffering it', async () => {
    const line = await misbehave(
      { name: 'huge-snapshot', count: 1_000_000 },
      'link',
      /agent link setup failed: .*frame of (\d+) bytes exceeds the maximum of 16777216 bytes/,
    );
    const length = Number(/frame of (\d+) bytes/.exec(line.msg)![1]);
    expect(length).toBeGreaterThan(50_000_000);
    await stillServing();
  });

  it(`caps a valid 100,000-port snapshot at maxForwards (${MAX_FORWARDS}) with one warning, and keeps forwarding`, async () => {
    const echoPort = await freePort();
    children.push(await guestServer(tb, 'tcp', '127.0.0.1', echoPort));
    const ports = [echoPort];
    while (ports.length < MAX_FORWARDS) {
      const p = await freePort();
      if (!ports.includes(p) && p !== staticPort) ports.push(p);
    }
    const mode = { name: 'many-ports', count: 100_000, ports };
    await misbehave(mode, 'link', /agent link up: .* pid \d+/);
    // The flood's other listeners (127.1.x.y) are ignored by the default rule, under a cap of their own.
    const detected = () => h.agent.forwards().filter((f) => f.source === 'detected' && f.state !== 'ignored');
    const ignored = () => h.agent.forwards().filter((f) => f.source === 'detected' && f.state === 'ignored');
    await waitFor(() => detected().length === MAX_FORWARDS && detected().every((f) => f.state === 'forwarding'), {
      what: `${MAX_FORWARDS} detected forwards`,
      timeoutMs: 30_000,
    });
    expect(new Set(detected().map((f) => f.guestAddr))).toEqual(new Set(ports.map((p) => `127.0.0.1:${p}`)));
    expect(ignored()).toHaveLength(MAX_FORWARDS);
    expect(h.agent.engine.capped).toBe(100_000 - 2 * MAX_FORWARDS);
    const echoed = await roundTrip('127.0.0.1', echoPort, 'through a detected forward under the cap');
    expect(echoed.toString()).toBe('through a detected forward under the cap');

    // The same flood again (a reconnect): still only the one warning.
    await misbehave(mode, 'link', /agent link up: .* pid \d+/);
    await waitFor(() => detected().every((f) => f.state === 'forwarding'), { what: 'forwards resumed' });
    const warnings = logLines().filter(
      (l) => l.component === 'forward' && /more listeners than maxForwards/.test(l.msg),
    );
    expect(warnings).toHaveLength(1);
    expect(warnings[0].maxForwards).toBe(MAX_FORWARDS);
    await stillServing();
  });

  it('survives a UDP reply flood: replies reach the client, unknown flows are dropped and logged, an oversized reply closes the link', async () => {
    const udpPort = await freePort();
    const mode = {
      name: 'udp-flood',
      listeners: [{ ...good, proto: 'udp', port: udpPort }],
      count: 20_000,
      size: 512,
    };
    const mark = logLines().length;
    await misbehave(mode, 'link', /agent link up/);
    const id = `udp/127.0.0.1:${udpPort}`;
    await waitFor(() => h.agent.forwards().find((f) => f.id === id)?.state === 'forwarding', { what: id });

    const client = dgram.createSocket('udp4');
    let received = 0;
    client.on('message', () => {
      received++;
    });
    await new Promise<void>((resolve) => client.bind(0, '127.0.0.1', () => resolve()));
    try {
      await waitFor(
        () => {
          client.send('start the flood', udpPort, '127.0.0.1');
          return hostileOut.includes('sent udp-flood');
        },
        { what: 'the UDP flood sent', timeoutMs: 30_000, intervalMs: 200 },
      );
      await waitFor(() => received > 0, { what: 'a flooded reply at the client' });
    } finally {
      client.close();
    }
    const since = () => logLines().slice(mark);
    await waitFor(
      () =>
        since().find(
          (l) =>
            l.component === 'link' &&
            /agent link down: invalid event udp\.reply: field data: expected at most 65527 bytes/.test(l.msg),
        ),
      { what: 'the oversized reply refused' },
    );
    const unknown = since().filter((l) => l.component === 'forward' && /udp reply for unknown flow/.test(l.msg));
    expect(unknown.length).toBeGreaterThanOrEqual(1);
    expect(unknown.length).toBeLessThan(20); // summarised, not one line per datagram
    await stillServing();
  });

  it('logs events the host does not handle once per link instead of once per event', async () => {
    const mark = logLines().length;
    await misbehave({ name: 'unhandled-events', count: 10_000 }, 'link', /ignoring fs\.events events from the guest/);
    await waitFor(() => hostileOut.includes('sent unhandled-events'), { what: 'the events sent' });
    await stillServing();
    const lines = logLines()
      .slice(mark)
      .filter((l) => /ignoring fs\.events/.test(l.msg));
    expect(lines).toHaveLength(1);
  });

  it('makes the text the guest supplies one inert line before it is logged, listed or printed', async () => {
    const port = await freePort();
    const command = 'node\u202egnp.exe\x1b[2J\n--evil';
    const mark = logLines().length;
    const mode = { name: 'evil-text', hostname: 'evil\nhost', listeners: [{ ...good, port, pid: 7, command }] };
    await misbehave(mode, 'link', /agent link up/);
    expect(h.agent.link.info?.hostname).toBe('evil host');
    const id = `tcp/127.0.0.1:${port}`;
    await waitFor(() => h.agent.forwards().find((f) => f.id === id)?.process, { what: `${id} with its process` });
    expect(h.agent.forwards().find((f) => f.id === id)?.process?.command).toBe('node\\u202egnp.exe\\x1b[2J --evil');
    expect(h.agent.status().guest?.hostname).toBe('evil host');
    // No line of the log carries a raw control or bidi character from the guest.
    const raw = readFileSync(logFile(), 'utf8').split('\n').slice(mark).join('\n');
    expect(raw).not.toContain('\u202e');
    await stillServing();
  });

  it('logs the first few names of unknown events, then that more came, instead of one line per name', async () => {
    const mark = logLines().length;
    await misbehave({ name: 'unknown-events', count: 20_000 }, 'link', /ignoring unknown event nope0 from the guest/);
    await waitFor(() => hostileOut.includes('sent unknown-events'), { what: 'the events sent' });
    await waitFor(
      () =>
        logLines()
          .slice(mark)
          .find((l) => /events of more than 16 names the host ignores/.test(l.msg)),
      { what: 'the line that says more came' },
    );
    await stillServing();
    const lines = logLines()
      .slice(mark)
      .filter((l) => /ignoring unknown event/.test(l.msg));
    expect(lines).toHaveLength(16);
  });

  it('applies a flood of port changes one merged delta at a time and ends with what the guest last said', async () => {
    const final = await freePort();
    children.push(await guestServer(tb, 'tcp', '127.0.0.1', final));
    const ports: number[] = [];
    while (ports.length < 200) {
      const p = await freePort();
      if (!ports.includes(p) && p !== staticPort && p !== final) ports.push(p);
    }
    // 4,000 deltas of 200 listeners each: far faster than host listeners open and close.
    await misbehave({ name: 'delta-flood', rounds: 2_000, ports, final }, 'link', /agent link up/);
    await waitFor(() => hostileOut.includes('sent delta-flood'), { what: 'the flood sent', timeoutMs: 60_000 });
    const id = `tcp/127.0.0.1:${final}`;
    await waitFor(() => h.agent.forwards().find((f) => f.id === id)?.state === 'forwarding', {
      what: `${id} forwarding after the flood`,
      timeoutMs: 30_000,
    });
    await waitFor(() => h.agent.forwards().every((f) => !ports.some((p) => f.guestAddr.endsWith(`:${p}`))), {
      what: 'the flooded ports gone',
    });
    expect((await roundTrip('127.0.0.1', final, 'after the flood')).toString()).toBe('after the flood');
    await stillServing();
  });

  it('forwards again once the real guest agent replaces the stand-in', async () => {
    hostile.stdin!.end();
    await waitFor(() => hostile.exitCode !== null, { what: 'the stand-in to exit' });
    const socket = join(tb.guestDir, 'agent.sock');
    const real = tb.spawn('node', [GUEST_BUNDLE, 'run', '--socket', socket, '--socket-owner', tb.user]);
    children.push(real);
    await waitFor(() => h.agent.link.up && h.agent.link.info?.version !== '0.0.0-hostile', {
      what: 'the real guest agent linked',
      timeoutMs: 30_000,
    });
    const port = await freePort();
    children.push(await guestServer(tb, 'tcp', '127.0.0.1', port));
    const id = `tcp/127.0.0.1:${port}`;
    await waitFor(() => h.agent.forwards().find((f) => f.id === id)?.state === 'forwarding', { what: id });
    expect((await roundTrip('::1', port, 'real agent again')).toString()).toBe('real agent again');
    await stillServing();
  });
});
