// The human form of `tether status`: one line per part, the guest agent's scan interval in whole milliseconds.
import { describe, expect, it } from 'vitest';
import type { ForwardView, StatusView } from '../model.js';
import { forwardTable, statusText } from './render.js';

const now = new Date().toISOString();
const status: StatusView = {
  name: 'vm',
  pid: 42,
  startedAt: now,
  build: null,
  state: 'ready',
  ssh: { target: 'me@127.0.0.1:2222', state: 'connected', since: now, lastError: null, reconnects: 0 },
  guest: {
    version: '0.1.0',
    build: 'f91eb48',
    hostname: 'vm',
    kernel: '6.1',
    arch: 'x64',
    scanIntervalMs: 191.5239326477051, // adaptive: the guest reports what it currently uses
    listenEvents: { on: false, detail: 'needs root' },
    agentPid: 7,
    agentStartedAt: now,
    listeners: 3,
  },
  link: {
    up: true,
    lastError: null,
    outdated: null,
    socket: '/run/tether/agent.sock',
    guestStopping: null,
    provisioning: false,
    provisionStep: null,
    provisionError: null,
    restartAt: null,
  },
  requirements: [],
  forwards: { forwarding: 1, conflict: 0, privileged: 0, ignored: 2, suspended: 0, error: 0, total: 3, capped: 0 },
  mounts: { pending: 0, mounting: 0, mounted: 0, suspended: 0, error: 0, unmounted: 0, total: 0 },
  mountStates: [],
  stopReason: null,
  lastErrors: [],
  logFile: '/tmp/current.log',
};

describe('status text', () => {
  it('shows the guest scan interval in whole milliseconds and the forward counts by state', () => {
    const text = statusText(status);
    expect(text).toContain('scan every 192 ms, 3 listeners');
    expect(text).toContain('forwards:     3 (1 forwarding, 2 ignored)\n');
  });

  it('says under the agent when it runs another build of tether than the command, and how to run this one', () => {
    expect(statusText(status)).not.toContain('!');
    const text = statusText(status, {
      staleBuild: 'the agent runs another build of tether (aaaa) than this command (bbbb)',
    });
    expect(text).toMatch(
      /^agent: .*\n {14}! the agent runs another build of tether \(aaaa\) than this command \(bbbb\); `tether down vm && tether up vm` runs this one\n/m,
    );
  });

  it('counts the guest listeners maxForwards leaves out beside the forwards', () => {
    const capped = { ...status, forwards: { ...status.forwards, capped: 1 } };
    expect(statusText(capped)).toContain(
      'forwards:     3 (1 forwarding, 2 ignored); 1 more guest listener over maxForwards, not forwarded or listed\n',
    );
  });

  it('says what a guest agent that is not connected waits for: the guest back, or its installation', () => {
    const down = { ...status, guest: null, link: { ...status.link, up: false, lastError: 'no answer' } };
    expect(statusText(down)).toContain('guest agent:  not connected (no answer)');
    expect(statusText({ ...down, link: { ...down.link, guestStopping: 'the guest is shutting down' } })).toContain(
      'guest agent:  not connected: the guest is shutting down; waiting for it to come back',
    );
    expect(statusText({ ...down, link: { ...down.link, provisioning: true } })).toContain(
      'guest agent:  not connected: the host agent is installing or starting it now\n',
    );
    const step = 'uploading tether-guest-linux-x64: 50 of 100 MB';
    expect(statusText({ ...down, link: { ...down.link, provisioning: true, provisionStep: step } })).toContain(
      `guest agent:  not connected: the host agent is installing or starting it now (${step})\n`,
    );
    // What keeps it from starting, once: the link's own error may already be that failure.
    const failed = 'uploading tether-guest.cjs failed: Permission denied';
    expect(statusText({ ...down, link: { ...down.link, provisionError: failed } })).toContain(
      `guest agent:  not connected (no answer; starting it failed: ${failed})`,
    );
    expect(
      statusText({ ...down, link: { ...down.link, lastError: `cannot start: ${failed}`, provisionError: failed } }),
    ).toContain(`guest agent:  not connected (cannot start: ${failed})\n`);
    // A start held back (the agent crashed right after the last one) says when it comes.
    const restartAt = new Date(Date.now() + 3_500).toISOString();
    expect(statusText({ ...down, link: { ...down.link, restartAt } })).toMatch(
      /guest agent: {2}not connected \(no answer\); the host agent starts it again in [34] s\n/,
    );
    const due = new Date(Date.now() - 500).toISOString();
    expect(statusText({ ...down, link: { ...down.link, restartAt: due } })).toContain(
      'guest agent:  not connected (no answer); the host agent starts it again now\n',
    );
  });

  it('lists each mount with its state and why it is not mounted', () => {
    const mount = {
      location: '/Users/me',
      mountPoint: '~',
      guestPath: '/home/me',
      driver: 'builtin',
      writable: false,
      inotify: 'off',
      since: now,
      cause: null,
    } as const;
    const text = statusText({
      ...status,
      mounts: { ...status.mounts, mounted: 1, suspended: 1, total: 2 },
      mountStates: [
        { ...mount, state: 'mounted', inotify: 'watching', error: null },
        {
          ...mount,
          location: '/src',
          mountPoint: '/src',
          guestPath: '/src',
          writable: true,
          state: 'suspended',
          error: 'ssh connection lost',
        },
      ],
    });
    expect(text).toContain(
      'mounts:       2 (1 mounted, 1 suspended)\n  /Users/me → ~ (/home/me): mounted (ro, inotify watching)\n',
    );
    expect(text).toContain('  /src → /src: suspended (rw, inotify off): ssh connection lost\n');
  });

  it('says when the guest scanner also runs on kernel listen events', () => {
    const on = { ...status.guest!, listenEvents: { on: true, detail: 'tracefs /sys/kernel/tracing' } };
    expect(statusText({ ...status, guest: on })).toContain('scan every 192 ms and on listen events, 3 listeners');
  });
});

describe('forward table', () => {
  const forward = (port: number, command: string, error: string | null): ForwardView => ({
    id: `tcp/127.0.0.1:${port}`,
    proto: 'tcp',
    guestAddr: `127.0.0.1:${port}`,
    hostAddrs: [`127.0.0.1:${port}`],
    state: error ? 'error' : 'forwarding',
    process: { pid: 9, command },
    connections: 0,
    bytesIn: 0,
    bytesOut: 0,
    since: now,
    error,
    heldBy: null,
    cause: null,
    source: 'detected',
  });

  it('keeps a command with newlines and tabs on its row, and pads no line past its last cell', () => {
    const out = forwardTable([
      forward(8000, 'python3 -c "import http.server\nhttp.server.test()"\t-x', null),
      forward(8001, 'node', 'a long reason that makes the error column wide'),
    ]);
    const lines = out.split('\n');
    expect(lines).toHaveLength(3);
    expect(lines[1]).toContain('9 python3 -c "import http.server http.ser');
    expect(lines.filter((l) => l !== l.trimEnd())).toEqual([]);
    expect(lines[1].endsWith('ago')).toBe(true); // an empty ERROR cell adds nothing
  });

  it('fits a terminal by cutting the error, then the command line, and gives them whole where there is room', () => {
    const command = `node ${'/srv/app/'.repeat(12)}server.js --port 8000`;
    const error = `host 127.0.0.1:8001 is in use by ${'another program '.repeat(6)}(pid 42)`;
    const rows = [forward(8000, command, null), forward(8001, 'node', error)];
    const narrow = forwardTable(rows, 130).split('\n');
    expect(Math.max(...narrow.map((l) => l.length))).toBeLessThanOrEqual(130);
    expect(narrow[2]).toMatch(/ {2}host 127\.0\.0\.1:…$/);
    expect(narrow[1]).toMatch(/ 9 node \/srv\/app\/.*… {2,}0 /);
    const wide = forwardTable(rows, 400).split('\n');
    expect(wide[1]).toContain(`9 ${command}`);
    expect(wide[2].endsWith(error)).toBe(true);
    // So narrow that cutting cannot fit it: the cut columns keep a readable minimum, the others stay whole.
    const tiny = forwardTable(rows, 40).split('\n');
    expect(tiny[1]).toMatch(/ 9 node \/srv\/app… /);
    expect(tiny[1]).toContain('127.0.0.1:8000');
  });
});
