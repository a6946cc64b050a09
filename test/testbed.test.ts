// The testbed itself: a network namespace with its own sshd plays the VM. These tests pin the properties every other
// integration test relies on: the guest sees only its own sockets, commands run where they claim to, sshd can be
// stopped and started, the bridge can be paused, and teardown stops what was spawned.
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { canRunTestbed, startTestbed, stopTestbed, type Testbed, testbedHome, useTestbed } from './helpers/testbed.js';
import { freePort, waitFor } from './helpers/wait.js';

/** Ports in LISTEN state (0A) in /proc/net/tcp or tcp6 text. */
function listeningPorts(procNetText: string): Set<number> {
  const ports = new Set<number>();
  for (const line of procNetText.split('\n')) {
    const fields = line.trim().split(/\s+/);
    if (fields[3] !== '0A') continue;
    const port = fields[1]?.split(':')[1];
    if (port) ports.add(Number.parseInt(port, 16));
  }
  return ports;
}

async function guestListeners(tb: Testbed): Promise<Set<number>> {
  const { stdout, code, stderr } = await tb.ssh('cat /proc/net/tcp /proc/net/tcp6');
  if (code !== 0) throw new Error(`reading /proc/net/tcp over ssh failed (${code}): ${stderr}`);
  return listeningPorts(stdout);
}

/** A TCP server in the guest namespace that greets each connection with "hello". */
function spawnGreeter(tb: Testbed, port: number): ChildProcess {
  return tb.spawn('socat', [`TCP-LISTEN:${port},bind=127.0.0.1,reuseaddr,fork`, 'SYSTEM:echo hello']);
}

function processState(pid: number): string {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0];
}

function bridgePids(tb: Testbed): number[] {
  return ['bridge-host', 'bridge-guest'].map((part) =>
    Number(readFileSync(path.join(tb.stateDir, 'pids', part), 'utf8').split(' ')[0]),
  );
}

describe.skipIf(!canRunTestbed())('testbed', () => {
  const testbed = useTestbed();

  describe('network isolation', () => {
    let hostServer: net.Server;
    let hostPort: number;

    beforeAll(async () => {
      hostServer = net.createServer((socket) => socket.destroy());
      hostServer.listen(0, '127.0.0.1');
      await once(hostServer, 'listening');
      hostPort = (hostServer.address() as net.AddressInfo).port;
    });

    afterAll(async () => {
      hostServer.close();
      await once(hostServer, 'close');
    });

    it('shows a listener started inside the namespace and not one opened on the host', async () => {
      const tb = testbed();
      const guestPort = await freePort();
      expect(guestPort).not.toBe(hostPort);
      spawnGreeter(tb, guestPort);

      const ports = await waitFor(
        async () => {
          const seen = await guestListeners(tb);
          return seen.has(guestPort) ? seen : undefined;
        },
        { what: `guest listener on 127.0.0.1:${guestPort} in /proc/net/tcp` },
      );
      expect(ports.has(22)).toBe(true);
      expect(ports.has(hostPort)).toBe(false);

      const greeting = await tb.exec(`socat -u TCP:127.0.0.1:${guestPort} -`);
      expect(greeting).toMatchObject({ code: 0, stdout: 'hello\n' });
    });
  });

  it('exec runs as root in the namespace, on the host filesystem, with output and exit code', async () => {
    const tb = testbed();
    expect(await tb.exec('echo out; echo err >&2; exit 3')).toEqual({ stdout: 'out\n', stderr: 'err\n', code: 3 });
    expect((await tb.exec('id -u')).stdout).toBe('0\n');

    const marker = path.join(tb.stateDir, 'marker');
    writeFileSync(marker, 'from the host');
    expect((await tb.exec(`cat ${marker}`)).stdout).toBe('from the host');

    const namespaceTcp = await tb.exec('cat /proc/net/tcp');
    expect(listeningPorts(namespaceTcp.stdout).has(22)).toBe(true);
    expect(listeningPorts(namespaceTcp.stdout).has(tb.sshPort)).toBe(false);
  });

  it('exec as the login user can use the guest directory', async () => {
    const tb = testbed();
    const result = await tb.exec(
      `id -un; echo "$HOME"; touch ${tb.guestDir}/owned && stat -c %U ${tb.guestDir}/owned`,
      {
        user: tb.user,
      },
    );
    expect(result).toEqual({ stdout: `${tb.user}\n${testbedHome(tb, tb.user)}\n${tb.user}\n`, stderr: '', code: 0 });
  });

  it('ssh logs in as the login user with a plain shell and returns output and exit code', async () => {
    const tb = testbed();
    expect(tb.user).toBe('tether-tb');
    expect(tb.hostKeyFingerprint).toMatch(/^SHA256:[A-Za-z0-9+/]{43}$/);
    // Each testbed's users have a home of their own (one VM's home is not another's).
    expect(await tb.ssh('id -un; echo "$HOME"; echo oops >&2')).toEqual({
      stdout: `${tb.user}\n${testbedHome(tb, tb.user)}\n`,
      stderr: 'oops\n',
      code: 0,
    });
    expect((await tb.ssh('exit 7')).code).toBe(7);
  });

  it('stopSshd ends sessions and refuses logins until startSshd', async () => {
    const tb = testbed();
    const sshArgs = ['-F', 'none', '-p', String(tb.sshPort), '-i', tb.identityFile, '-o', 'BatchMode=yes'];
    sshArgs.push(
      '-o',
      `UserKnownHostsFile=${tb.knownHostsFile}`,
      `${tb.user}@127.0.0.1`,
      'echo started; exec sleep 600',
    );
    const session = spawn('ssh', sshArgs, { stdio: ['ignore', 'pipe', 'ignore'] });
    const sessionExit = once(session, 'exit');
    let started = '';
    session.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      started += chunk;
    });
    await waitFor(() => started.includes('started'), { what: 'long ssh session to start' });

    await tb.stopSshd();
    await sessionExit;
    expect((await tb.ssh('true')).code).toBe(255);

    await tb.startSshd();
    expect(await tb.ssh('echo back')).toMatchObject({ stdout: 'back\n', code: 0 });
  });

  it('pauseBridge freezes the bridge and resumeBridge lets waiting logins through', async () => {
    const tb = testbed();
    tb.pauseBridge();
    try {
      for (const pid of bridgePids(tb)) expect(processState(pid)).toBe('T');
    } finally {
      tb.resumeBridge();
    }
    for (const pid of bridgePids(tb)) expect(processState(pid)).not.toBe('T');

    tb.pauseBridge();
    const login = tb.ssh('echo through');
    tb.resumeBridge();
    expect(await login).toMatchObject({ stdout: 'through\n', code: 0 });
  });

  it('runs a second testbed at once, isolated, and teardown kills what it spawned', async () => {
    const first = testbed();
    const second = await startTestbed();
    let stopped = false;
    try {
      expect(second.name).not.toBe(first.name);
      expect(second.sshPort).not.toBe(first.sshPort);
      expect(second.hostKeyFingerprint).not.toBe(first.hostKeyFingerprint);

      const port = await freePort();
      const server = spawnGreeter(second, port);
      await waitFor(async () => (await guestListeners(second)).has(port), { what: `listener ${port} in second` });
      expect((await guestListeners(first)).has(port)).toBe(false);
      expect((await first.ssh('echo first')).stdout).toBe('first\n');

      await stopTestbed(second);
      stopped = true;
      expect(server.exitCode !== null || server.signalCode !== null).toBe(true);
      expect((await first.ssh('echo still')).stdout).toBe('still\n');
    } finally {
      if (!stopped) await stopTestbed(second);
    }
  });
});

describe('waitFor', () => {
  it('returns the first truthy value and ignores throws until then', async () => {
    let calls = 0;
    const value = await waitFor(() => {
      calls += 1;
      if (calls < 3) throw new Error('not yet');
      return `ready after ${calls}`;
    });
    expect(value).toBe('ready after 3');
  });

  it('rejects with what it waited for and the last error', async () => {
    await expect(
      waitFor(
        () => {
          throw new Error('still closed');
        },
        { timeoutMs: 50, intervalMs: 10, what: 'the door' },
      ),
    ).rejects.toThrow('timed out after 50ms waiting for the door; last error: still closed');
  });
});
