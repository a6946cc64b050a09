// How the host agent writes a socket address in messages, logs and views: `127.0.0.1:8080`, `[::1]:8080`.

export function formatAddr(ip: string, port: number): string {
  return ip.includes(':') ? `[${ip}]:${port}` : `${ip}:${port}`;
}
