// HostBindings with bindings whose listen attempts fail as the test says: what each bind error means (a conflict
// retried until the address is free, EACCES privileged, a missing loopback not retried), who holds a busy address,
// sharing by ref count, and which forward a shared binding serves and routes to.
import { pino } from 'pino';
import { describe, expect, it, vi } from 'vitest';
import type { HostBinding } from './binding.js';
import { type BindingRef, bindingKey, HostBindings } from './host-bindings.js';

/** A binding whose listen attempts fail with these codes in turn, then succeed. */
class FakeBinding implements HostBinding {
  attempts = 0;
  closed = false;
  constructor(
    readonly address: string,
    private readonly failures: string[] = [],
  ) {}
  async listen(): Promise<void> {
    const code = this.failures[this.attempts++];
    if (code) throw Object.assign(new Error(`listen ${code}: ${this.address}`), { code });
  }
  async close(): Promise<void> {
    this.closed = true;
  }
}

const ref = (
  id: string,
  guestIP: string,
  guestPort: number,
  source: BindingRef['source'] = 'detected',
): BindingRef => ({
  id,
  source,
  guestIP,
  guestPort,
  ignored: null,
  stats: { connections: 0, bytesIn: 0, bytesOut: 0 },
  opened: () => {},
});

function table() {
  const changed: string[] = [];
  const bindings = new HostBindings<BindingRef>({
    log: pino({ level: 'silent' }),
    retryInitialMs: 1,
    retryMaxMs: 4,
    onChange: (f) => changed.push(f.id),
  });
  return { bindings, changed };
}

const waitUntil = (ok: () => boolean) =>
  vi.waitFor(() => {
    if (!ok()) throw new Error('not yet');
  });

describe('HostBindings', () => {
  it('shares one binding among its forwards and closes it when the last one goes', async () => {
    const { bindings, changed } = table();
    const key = bindingKey('tcp', '127.0.0.1:8080');
    const made: FakeBinding[] = [];
    const make = () => {
      const b = new FakeBinding('127.0.0.1:8080');
      made.push(b);
      return b;
    };
    const a = ref('tcp/0.0.0.0:8080', '0.0.0.0', 8080);
    const b = ref('tcp/[::]:8080', '::', 8080);
    await bindings.acquire(a, key, make);
    await bindings.acquire(b, key, make);
    expect(made).toHaveLength(1);
    expect(bindings.of([key])[0]).toMatchObject({ status: 'bound', error: null });
    expect(changed).toEqual([a.id, a.id, b.id]);
    bindings.release(a, [key]);
    expect([...bindings.refs(key)]).toEqual([b]);
    expect(made[0].closed).toBe(false);
    bindings.release(b, [key]);
    expect(bindings.refs(key).size).toBe(0);
    expect(made[0].closed).toBe(true);
  });

  it('shows a busy address as a conflict with another process and retries until it is free', async () => {
    const { bindings } = table();
    const key = bindingKey('tcp', '127.0.0.1:8080');
    const binding = new FakeBinding('127.0.0.1:8080', ['EADDRINUSE', 'EADDRINUSE']);
    await bindings.acquire(ref('tcp/127.0.0.1:8080', '127.0.0.1', 8080), key, () => binding);
    expect(bindings.of([key])[0]).toMatchObject({
      status: 'conflict',
      error: 'host address 127.0.0.1:8080 is in use by another process; retrying until it is free',
      holder: { kind: 'process' },
    });
    await waitUntil(() => bindings.of([key])[0].status === 'bound');
    expect(bindings.of([key])[0].holder).toBeNull();
    expect(binding.attempts).toBe(3);
    await bindings.stop();
  });

  it("names tether's own forward when it holds an overlapping address of the port", async () => {
    const { bindings } = table();
    const holder = ref('tcp/0.0.0.0:9000', '0.0.0.0', 9000, 'runtime');
    await bindings.acquire(holder, bindingKey('tcp', '0.0.0.0:9000'), () => new FakeBinding('0.0.0.0:9000'));
    const key = bindingKey('tcp', '127.0.0.1:9000');
    await bindings.acquire(
      ref('tcp/127.0.0.1:9000', '127.0.0.1', 9000),
      key,
      () => new FakeBinding('127.0.0.1:9000', ['EADDRINUSE']),
    );
    expect(bindings.of([key])[0].error).toBe(
      "host address 127.0.0.1:9000 is in use by tether's forward tcp/0.0.0.0:9000 (on 0.0.0.0:9000); retrying until it is free",
    );
    expect(bindings.of([key])[0].holder).toEqual({ kind: 'forward', id: 'tcp/0.0.0.0:9000', address: '0.0.0.0:9000' });
    await bindings.stop();
  });

  it('tells privileged ports, retried transient errors and a loopback the host lacks apart', async () => {
    const { bindings } = table();
    const cases = [
      { address: '127.0.0.1:80', code: 'EACCES', status: 'privileged', retried: false },
      { address: '192.0.2.1:8080', code: 'EADDRNOTAVAIL', status: 'error', retried: true },
      { address: '[::1]:8080', code: 'EADDRNOTAVAIL', status: 'error', retried: false },
    ];
    for (const c of cases) {
      const binding = new FakeBinding(c.address, [c.code, c.code, c.code]);
      const key = bindingKey('tcp', c.address);
      await bindings.acquire(ref(`tcp/${c.address}`, '127.0.0.1', 8080), key, () => binding);
      const view = bindings.of([key])[0];
      expect(view.status).toBe(c.status);
      expect(view.error?.endsWith('; retrying')).toBe(c.retried);
      if (c.retried) await waitUntil(() => binding.attempts > 1);
      else {
        await new Promise((r) => setTimeout(r, 20));
        expect(binding.attempts).toBe(1);
      }
    }
    expect(bindings.of([bindingKey('tcp', '127.0.0.1:80')])[0].error).toContain('ports below 1024 need privileges');
    await bindings.stop();
  });

  it('serves the explicit forward of a shared binding, routing to a guest listener of its own family', async () => {
    const { bindings } = table();
    const key = bindingKey('tcp', '[::1]:8080');
    let route: Parameters<Parameters<typeof bindings.acquire>[2]>[0] = () => null;
    const make = (r: typeof route) => {
      route = r;
      return new FakeBinding('[::1]:8080');
    };
    const v4 = ref('tcp/0.0.0.0:8080', '0.0.0.0', 8080);
    const v6 = ref('tcp/[::]:8080', '::', 8080);
    await bindings.acquire(v4, key, make);
    await bindings.acquire(v6, key, make);
    expect(bindings.owner(bindings.of([key])[0])).toBe(v4);
    expect(route(6)).toMatchObject({ id: v6.id, guestIP: '::1', fallbackIP: '127.0.0.1', guestPort: 8080 });
    expect(route(4)).toMatchObject({ id: v4.id, guestIP: '127.0.0.1', guestPort: 8080 });

    const explicit = ref('tcp/127.0.0.1:5173->8080', '127.0.0.1', 5173, 'runtime');
    await bindings.acquire(explicit, key, make);
    expect(bindings.owner(bindings.of([key])[0])).toBe(explicit);
    expect(route(6)).toMatchObject({ id: explicit.id, guestIP: '127.0.0.1', fallbackIP: '::1', guestPort: 5173 });
    await bindings.stop();
  });

  it('routes to the guest listener on loopback beside a wildcard one of its port, as the guest kernel delivers', async () => {
    const { bindings } = table();
    const routes: Record<string, Parameters<Parameters<typeof bindings.acquire>[2]>[0]> = {};
    const make = (address: string) => (r: (typeof routes)[string]) => {
      routes[address] = r;
      return new FakeBinding(address);
    };
    // Two UDP servers on one port (SO_REUSEADDR): the one on 127.0.0.1 gets what is sent to loopback.
    const wildcard = ref('udp/0.0.0.0:5600', '0.0.0.0', 5600);
    const loopback = ref('udp/127.0.0.1:5600', '127.0.0.1', 5600);
    for (const address of ['127.0.0.1:5600', '[::1]:5600']) {
      const key = bindingKey('udp', address);
      await bindings.acquire(wildcard, key, make(address));
      await bindings.acquire(loopback, key, make(address));
      expect(bindings.servedBy(bindings.of([key])[0])).toBe(loopback);
    }
    expect(routes['127.0.0.1:5600'](4)).toMatchObject({ id: loopback.id, guestIP: '127.0.0.1' });
    expect(routes['[::1]:5600'](6)).toMatchObject({ id: loopback.id });

    // An added forward to one guest address goes there.
    const key = bindingKey('udp', '127.0.0.1:5353');
    const added = ref('udp/127.0.0.53:53->5353', '127.0.0.53', 53, 'runtime');
    await bindings.acquire(added, key, make('127.0.0.1:5353'));
    await bindings.acquire(ref('udp/127.0.0.1:53->5353', '127.0.0.1', 53), key, make('127.0.0.1:5353'));
    expect(routes['127.0.0.1:5353'](4)).toMatchObject({ id: added.id, guestIP: '127.0.0.53' });
    await bindings.stop();
  });
});
