#!/usr/bin/env node
// A plain Node.js gRPC client of berthd, driven by integration/tests/grpc_clients.rs.
//
// It uses what any Node user has: @grpc/grpc-js (gRPC in JavaScript over Node's own HTTP/2,
// an implementation independent of grpc-core's and of tonic's), @grpc/proto-loader, and the
// .proto files of the standard health and reflection packages (grpc-health-check,
// @grpc/reflection). It has no copy of berth's protos: it finds berth's services through
// server reflection, loads their descriptors from it, and calls each. Its channels take no
// options, but for one call that sends the socket's path itself as :authority, as grpc-java,
// Bazel and Go programs dialling a path do. It does not judge: it writes what it saw as one
// JSON object on stdout, and the Rust test asserts on that.
//
//     NODE_PATH=DIR/node_modules node berth_client.js --address unix:///path/berth.sock --image REF

'use strict';

const path = require('path');
const grpc = require('@grpc/grpc-js');
const loader = require('@grpc/proto-loader');

const TIMEOUT_MS = 20000;
const LOAD = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true };

function args() {
  const out = {};
  const a = process.argv.slice(2);
  for (let i = 0; i + 1 < a.length; i += 2) out[a[i].replace(/^--/, '')] = a[i + 1];
  if (!out.address || !out.image) throw new Error('usage: --address unix:///PATH --image REF');
  return out;
}

const deadline = () => Date.now() + TIMEOUT_MS;
const codeName = (e) => (e && typeof e.code === 'number' ? grpc.status[e.code] : String(e));

// A .proto file shipped inside an installed package.
function packageProto(pkg, rel) {
  return path.join(path.dirname(require.resolve(pkg + '/package.json')), rel);
}

function unary(client, method, request, metadata) {
  return new Promise((resolve, reject) => {
    client[method](request, metadata || new grpc.Metadata(), { deadline: deadline() }, (err, r) =>
      err ? reject(err) : resolve(r),
    );
  });
}

async function health(address) {
  const def = loader.loadSync(packageProto('grpc-health-check', 'proto/health/v1/health.proto'), LOAD);
  const Health = grpc.loadPackageDefinition(def).grpc.health.v1.Health;
  const client = new Health(address, grpc.credentials.createInsecure());
  const out = {};
  for (const service of ['', 'berth.image', 'no.such.service']) {
    try {
      out[service] = (await unary(client, 'Check', { service })).status;
    } catch (e) {
      out[service] = 'error:' + codeName(e);
    }
  }
  client.close();
  return out;
}

// The strings of field `field` (wire type 2) of an encoded message: enough of a
// FileDescriptorProto to read its name (1) and dependencies (3).
function stringsOf(buf, field) {
  const out = [];
  let i = 0;
  const varint = () => {
    let v = 0;
    let shift = 0;
    for (;;) {
      const b = buf[i++];
      v += (b & 0x7f) * 2 ** shift;
      if (b < 0x80) return v;
      shift += 7;
    }
  };
  while (i < buf.length) {
    const key = varint();
    const wire = key % 8;
    if (wire === 0) varint();
    else if (wire === 1) i += 8;
    else if (wire === 5) i += 4;
    else if (wire === 2) {
      const len = varint();
      if (Math.floor(key / 8) === field) out.push(buf.subarray(i, i + len).toString('utf8'));
      i += len;
    } else throw new Error('unexpected wire type ' + wire + ' in a file descriptor');
  }
  return out;
}

// One reflection stream (v1 or v1alpha): the services listed, and the descriptors of berth's
// services with every file they import, as a FileDescriptorSet loaded by proto-loader.
async function reflect(address, version) {
  const proto = packageProto('@grpc/reflection', `build/proto/grpc/reflection/${version}/reflection.proto`);
  const def = loader.loadSync(proto, LOAD);
  const Reflection = grpc.loadPackageDefinition(def).grpc.reflection[version].ServerReflection;
  const client = new Reflection(address, grpc.credentials.createInsecure());
  const call = client.ServerReflectionInfo({ deadline: deadline() });
  const waiting = [];
  const failed = new Promise((_, reject) => call.on('error', reject));
  failed.catch(() => {});
  call.on('data', (r) => waiting.shift().resolve(r));
  const ask = (request) =>
    Promise.race([
      new Promise((resolve) => {
        waiting.push({ resolve });
        call.write(request);
      }),
      failed,
    ]);
  try {
    const listed = await ask({ list_services: '' });
    const services = listed.list_services_response.service.map((s) => s.name).sort();
    const files = new Map();
    const add = (fds) => {
      const fresh = [];
      for (const fd of fds) {
        const name = stringsOf(fd, 1)[0];
        if (!files.has(name)) {
          files.set(name, fd);
          fresh.push(fd);
        }
      }
      return fresh;
    };
    const errors = [];
    const answer = (r) => {
      if (r.message_response === 'error_response') {
        errors.push(r.error_response.error_message);
        return [];
      }
      return r.file_descriptor_response.file_descriptor_proto;
    };
    let todo = [];
    for (const s of services.filter((s) => s.startsWith('berth.'))) {
      todo.push(...add(answer(await ask({ file_containing_symbol: s }))));
    }
    while (todo.length) {
      const next = [];
      for (const fd of todo) {
        for (const dep of stringsOf(fd, 3)) {
          if (!files.has(dep)) next.push(...add(answer(await ask({ file_by_filename: dep }))));
        }
      }
      todo = next;
    }
    call.end();
    client.close();
    const set = Buffer.concat(
      [...files.values()].flatMap((fd) => [Buffer.from([0x0a]), varintBytes(fd.length), fd]),
    );
    return { services, files: [...files.keys()].sort(), errors, set };
  } catch (e) {
    call.cancel();
    client.close();
    return { error: codeName(e) + ': ' + (e.details || e.message) };
  }
}

function varintBytes(n) {
  const out = [];
  while (n >= 0x80) {
    out.push((n % 0x80) | 0x80);
    n = Math.floor(n / 0x80);
  }
  out.push(n);
  return Buffer.from(out);
}

// A harmless call of each berth service: [method, request, how]; `how` is unary, stream (a
// server stream: its headers are awaited, then it is cancelled) or empty-stream (a client
// stream that sends nothing). A service missing here (and in read_calls of
// ../py/berth_client.py) fails the test: give it one.
function readCalls(image) {
  return {
    'berth.build.v1.Build': ['Build', null, 'empty-stream'],
    'berth.containers.v1.Containers': ['List', {}, 'unary'],
    'berth.content.v1.Content': ['List', {}, 'unary'],
    'berth.events.v1.Events': ['Subscribe', {}, 'stream'],
    'berth.images.v1.Images': ['List', {}, 'unary'],
    'berth.leases.v1.Leases': ['List', {}, 'unary'],
    'berth.namespaces.v1.Namespaces': ['List', {}, 'unary'],
    'berth.networks.v1.Networks': ['List', {}, 'unary'],
    'berth.registry.v1.Registry': ['Resolve', { reference: image }, 'unary'],
    'berth.snapshots.v1.Snapshots': ['List', {}, 'unary'],
    'berth.tasks.v1.Tasks': ['List', {}, 'unary'],
    'berth.version.v1.Version': ['Version', {}, 'unary'],
    'berth.volumes.v1.Volumes': ['List', {}, 'unary'],
  };
}

function callOnce(client, method, request, how) {
  return new Promise((resolve, reject) => {
    const opts = { deadline: deadline() };
    if (how === 'unary') {
      client[method](request, opts, (err, r) => (err ? reject(err) : resolve(r)));
    } else if (how === 'stream') {
      const call = client[method](request, opts);
      let open = false;
      call.on('metadata', () => {
        open = true;
        call.cancel();
      });
      call.on('data', () => {});
      call.on('error', (e) => (open && e.code === grpc.status.CANCELLED ? resolve({}) : reject(e)));
      call.on('end', () => resolve({}));
    } else {
      const call = client[method](opts);
      call.on('data', () => {});
      call.on('error', reject);
      call.on('end', () => resolve({}));
      call.end();
    }
  });
}

async function callEach(address, reflected, image) {
  const known = readCalls(image);
  const defs = loader.loadFileDescriptorSetFromBuffer(reflected.set, LOAD);
  const out = {};
  for (const service of reflected.services.filter((s) => s.startsWith('berth.'))) {
    if (!known[service]) {
      out[service] = 'no call known';
      continue;
    }
    if (!defs[service]) {
      out[service] = 'no descriptor from reflection';
      continue;
    }
    const [method, request, how] = known[service];
    const Client = grpc.makeClientConstructor(defs[service], service);
    const client = new Client(address, grpc.credentials.createInsecure());
    try {
      await callOnce(client, method, request, how);
      out[service] = 'OK';
    } catch (e) {
      out[service] = codeName(e) + ': ' + e.details;
    }
    client.close();
  }
  return out;
}

// Images.List without metadata (namespace default) and with berth-namespace: third, and the
// methods of Images, all from the descriptors that reflection gave.
async function images(address, reflected) {
  const defs = loader.loadFileDescriptorSetFromBuffer(reflected.set, LOAD);
  const name = 'berth.images.v1.Images';
  if (!defs[name]) return { error: 'no descriptor of ' + name + ' from reflection' };
  const Client = grpc.makeClientConstructor(defs[name], name);
  const client = new Client(address, grpc.credentials.createInsecure());
  const out = { methods: Object.keys(defs[name]).sort() };
  try {
    out.default = (await unary(client, 'List', {})).images.map((i) => i.image.name);
    const md = new grpc.Metadata();
    md.set('berth-namespace', 'third');
    out.third = (await unary(client, 'List', {}, md)).images.map((i) => i.image.name);
  } catch (e) {
    out.error = codeName(e) + ': ' + e.details;
  }
  client.close();
  return out;
}

// The Version call once more on a channel whose :authority is the socket's path itself.
async function rawPathAuthority(address, reflected) {
  const defs = loader.loadFileDescriptorSetFromBuffer(reflected.set, LOAD);
  const name = 'berth.version.v1.Version';
  const Client = grpc.makeClientConstructor(defs[name], name);
  const sockPath = address.replace(/^unix:(\/\/)?/, '');
  const client = new Client(address, grpc.credentials.createInsecure(), {
    'grpc.default_authority': sockPath,
  });
  try {
    await unary(client, 'Version', {});
    return 'OK';
  } catch (e) {
    return codeName(e) + ': ' + e.details;
  } finally {
    client.close();
  }
}

async function main() {
  const a = args();
  const report = {
    grpc_js: require('@grpc/grpc-js/package.json').version,
    node: process.version,
  };
  report.health = await health(a.address);
  const v1 = await reflect(a.address, 'v1');
  const v1alpha = await reflect(a.address, 'v1alpha');
  const summary = (r) => (r.error ? { error: r.error } : { services: r.services, files: r.files, errors: r.errors });
  report.reflection_v1 = summary(v1);
  report.reflection_v1alpha = summary(v1alpha);
  if (!v1.error) {
    report.calls = await callEach(a.address, v1, a.image);
    report.images = await images(a.address, v1);
    report.raw_path_authority = await rawPathAuthority(a.address, v1);
  }
  process.stdout.write(JSON.stringify(report) + '\n');
}

main().catch((e) => {
  process.stderr.write(String((e && e.stack) || e) + '\n');
  process.exit(1);
});
