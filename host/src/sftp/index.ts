// Public surface of tether's builtin SFTP v3 server; mount/ wires serveSftp() to an exec channel.
export { type SftpLogger, type SftpServerOptions, type SftpSession, type SftpStats, serveSftp } from './server.js';
