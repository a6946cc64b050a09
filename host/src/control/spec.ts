// Request bodies of the control API, validated at the boundary: a ForwardSpec (POST /v1/forwards).
import { IpAddress, Port } from '@tether/protocol';
import { z } from 'zod';

const path = z.string().min(1).max(1024);

const PortSpecSchema = z
  .object({
    proto: z.enum(['tcp', 'udp']),
    hostIP: IpAddress.optional(),
    hostPort: Port,
    /** Default 127.0.0.1 (or the guest's ::1 when only that listens); another address as `ssh -L PORT:HOST:PORT` has. */
    guestIP: IpAddress.optional(),
    guestPort: Port,
  })
  .strict();
const UnixSpecSchema = z.object({ proto: z.literal('unix'), guestSocket: path, hostSocket: path }).strict();

/** A request to add a forward at runtime (`tether forward add`): a TCP or UDP port, or a unix socket. */
export type ForwardSpec = z.infer<typeof PortSpecSchema> | z.infer<typeof UnixSpecSchema>;

/** Parses a ForwardSpec; throws an Error whose message lists every problem as `field: message`. */
export function parseForwardSpec(body: unknown): ForwardSpec {
  // `proto` picks the shape, so it is checked first (the union alone would only say "Invalid input"); without one, a
  // body naming a guestSocket is a unix forward and any other a TCP one, as for `tether forward add`.
  if (typeof body === 'object' && body !== null && !Array.isArray(body)) {
    const { proto } = body as { proto?: unknown };
    if (proto === undefined) body = { ...body, proto: 'guestSocket' in body ? 'unix' : 'tcp' };
    else if (proto !== 'tcp' && proto !== 'udp' && proto !== 'unix')
      throw new Error(`invalid forward: proto: expected "tcp", "udp" or "unix", got ${JSON.stringify(proto)}`);
  }
  const unix = (body as { proto?: unknown } | null)?.proto === 'unix';
  const r = (unix ? UnixSpecSchema : PortSpecSchema).safeParse(body);
  if (r.success) return r.data;
  const problems = r.error.issues.map((i) => `${i.path.join('.') || 'body'}: ${i.message}`);
  throw new Error(`invalid forward: ${problems.join('; ')}`);
}
