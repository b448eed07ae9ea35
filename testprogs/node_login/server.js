// node_login: the leaky login server of the scenario, in JavaScript.
// Each connection sends "LOGIN <name>\n", gets "OK\n", then logs out by
// closing its side; the server closes the connection at its end. Every
// login leaks one socket in statsdInit (a metrics listener, never closed).
// "QUIT\n" ends the server.
//
//	EXPECT listen port=N
//	EXPECT leak fd=N syscall=socket site=server.js:LINE fn=statsdInit
//	EXPECT closed fd=N   (a connection, once the server closed it)
//
// A JIT frame is named by the function it is in, at the line where that
// function begins: statsdInit's EXPECT line is computed on that line.
//
// usage: node --perf-basic-prof --interpreted-frames-native-stack server.js
'use strict';
const net = require('net');
const path = require('path');

const metrics = [];

function expect(text) {
  process.stdout.write(`EXPECT ${text}\n`);
}

// The file:line of the caller of `where`, from a V8 stack trace.
function where(error) {
  const frame = error.stack.split('\n')[1];
  const [, file, line] = frame.match(/\(?([^\s(]+):(\d+):\d+\)?$/);
  return `${path.basename(file)}:${line}`;
}

function statsdInit() { const site = where(new Error());
  const listener = net.createServer();
  listener.listen(0);
  metrics.push(listener);
  expect(`leak fd=${listener._handle.fd} syscall=socket site=${site} fn=statsdInit`);
}

function onLogin(conn) {
  statsdInit();
  conn.write('OK\n');
}

const server = net.createServer((conn) => {
  const fd = conn._handle.fd;
  // 'close' comes once the handle, and its fd, are closed.
  conn.on('close', () => expect(`closed fd=${fd}`));
  let buffered = '';
  conn.on('data', (chunk) => {
    buffered += chunk;
    if (!buffered.includes('\n')) return;
    const line = buffered.trim();
    buffered = '';
    if (line.startsWith('LOGIN ')) onLogin(conn);
    else if (line === 'QUIT') process.exit(0);
  });
  conn.on('end', () => conn.end());
  conn.on('error', () => conn.destroy());
});
server.listen(0, '127.0.0.1', () => expect(`listen port=${server.address().port}`));
