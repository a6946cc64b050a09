// Entry of the SFTP server's worker thread (threaded.ts starts it): one session of the builtin server on a
// PortStream over the thread's parent port. Log lines go to the main thread's logger; the session's end is reported
// once everything it wrote has been posted.
import { parentPort, workerData } from 'node:worker_threads';
import { PortStream } from './port-stream.js';
import { type SftpLogger, type SftpSession, serveSftp } from './server.js';
import type { FromSftpThread, SftpThreadOptions, ToSftpThread } from './threaded.js';

function main(): void {
  const port = parentPort;
  if (!port) throw new Error('sftp/worker.js runs only as a worker thread (see sftp/threaded.js)');
  let session: SftpSession | null = null;
  const stream = new PortStream(port, (m) => {
    if ((m as ToSftpThread).t === 'close') session?.close((m as ToSftpThread).reason);
  });
  const send = (m: FromSftpThread) => stream.post(m);
  const line = (level: keyof SftpLogger) => (obj: object, msg: string) => send({ t: 'log', level, obj, msg });
  const log: SftpLogger = { debug: line('debug'), info: line('info'), warn: line('warn'), error: line('error') };

  const opts = workerData as SftpThreadOptions;
  try {
    session = serveSftp(stream, { ...opts, log });
  } catch (err) {
    send({ t: 'closed', reason: `cannot serve ${opts.root}: ${(err as Error).message}` });
    stream.detach();
    return;
  }
  session.once('close', ({ reason }: { reason: string }) => {
    let sent = false;
    const done = () => {
      if (sent) return;
      sent = true;
      send({ t: 'closed', reason });
      stream.detach();
    };
    if (stream.writableFinished || stream.destroyed) done();
    else {
      stream.once('finish', done);
      stream.once('close', done);
    }
  });
}

main();
