// Guest side of the forwarding benchmark, run inside the testbed namespace (nsenter --net): three TCP servers on
// 127.0.0.1 — echo, sink (reads to EOF, answers "<bytes>\n") and source (reads "<N>\n", sends N bytes, ends) — and,
// on stdin, listener commands for the detection trials: `open PORT` → "listening PORT <epoch ms>", `close PORT` →
// "closed PORT". Prints "ready" once the three servers listen.
//
//   node forward-guest.mjs ECHO_PORT SINK_PORT SOURCE_PORT
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { createInterface } from 'node:readline';

const [echoPort, sinkPort, sourcePort] = process.argv.slice(2).map(Number);
const now = () => performance.timeOrigin + performance.now();
const BLOCK = randomBytes(256 * 1024);

function echo(s) {
  s.setNoDelay(true);
  s.pipe(s);
}

function sink(s) {
  let n = 0;
  s.on('data', (d) => {
    n += d.length;
  });
  s.on('end', () => s.end(`${n}\n`));
}

function source(s) {
  let line = '';
  const first = (d) => {
    line += d;
    if (!line.includes('\n')) return;
    s.off('data', first);
    s.resume(); // drain (and discard) anything after the request line, so the client's FIN arrives
    let left = Number(line.trim());
    const pump = () => {
      while (left > 0) {
        const b = left >= BLOCK.length ? BLOCK : BLOCK.subarray(0, left);
        left -= b.length;
        if (!s.write(b)) return s.once('drain', pump);
      }
      s.end();
    };
    pump();
  };
  s.on('data', first);
  // A client that leaves before asking (the readiness probe) gets an end too, so no connection lingers half-open.
  s.on('end', () => {
    if (!line.includes('\n')) s.end();
  });
}

function serve(port, handler) {
  return new Promise((resolve, reject) => {
    const server = net.createServer({ allowHalfOpen: true }, (s) => {
      s.on('error', () => {});
      handler(s);
    });
    server.once('error', reject);
    server.listen({ host: '127.0.0.1', port }, resolve);
  });
}

await Promise.all([serve(echoPort, echo), serve(sinkPort, sink), serve(sourcePort, source)]);
console.log('ready');

const listeners = new Map();
createInterface({ input: process.stdin }).on('line', (line) => {
  const [cmd, arg] = line.trim().split(' ');
  const port = Number(arg);
  if (cmd === 'open') {
    const server = net.createServer((s) => s.destroy());
    server.on('error', (err) => console.log(`error ${port} ${err.code ?? err.message}`));
    server.listen({ host: '127.0.0.1', port }, () => {
      const t = now();
      listeners.set(port, server);
      console.log(`listening ${port} ${t}`);
    });
  } else if (cmd === 'close') {
    const server = listeners.get(port);
    listeners.delete(port);
    if (!server) console.log(`closed ${port}`);
    else server.close(() => console.log(`closed ${port}`));
  }
});
process.stdin.on('end', () => process.exit(0));
