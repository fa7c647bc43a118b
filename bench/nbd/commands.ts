// The command lines of the servers we compare against, built in one place
// so that the README, the smoke test and the harness agree.
//
// qemu-storage-daemon fleecing (QEMU ≥ 7.0; docs/interop/… "image fleecing"):
//
//   NBD "volume" (rw) ──► copy-before-write "cbw" ──file──► raw "source" ──► file IMG
//                              │ target                   (old data copied out
//                              ▼                           before a write passes)
//                          raw "target" ──► file TARGET (sparse, fresh per workload)
//   NBD "image" (ro) ──► snapshot-access "fleece" ──file──► cbw
//                        (reads a cluster from target once copied, else from source)
//
// No iothread: QEMU 7.2 aborts when an NBD client disconnects from an
// export that runs in one. The target is a sparse raw file on the same
// tmpfs as our diff storage: QEMU's cheapest target (no qcow2 metadata).

export const QSD_VOLUME_EXPORT = 'volume';
export const QSD_IMAGE_EXPORT = 'image';

function nbdServerArgs(socket_path: string): string[] {
  return ['--nbd-server', `addr.type=unix,addr.path=${socket_path}`];
}

function sourceArgs(image_path: string): string[] {
  return [
    '--blockdev', `driver=file,node-name=source-file,filename=${image_path}`,
    '--blockdev', 'driver=raw,node-name=source,file=source-file',
  ];
}

/** A plain writable export of the raw image. */
export function qsdPlainArgs(image_path: string, socket_path: string): string[] {
  return [
    ...sourceArgs(image_path),
    ...nbdServerArgs(socket_path),
    '--export', `type=nbd,id=export-volume,node-name=source,name=${QSD_VOLUME_EXPORT},writable=on`,
  ];
}

/** The fleecing graph drawn above: volume export through the filter, image export through snapshot-access. */
export function qsdFleecingArgs(image_path: string, target_path: string, socket_path: string): string[] {
  return [
    ...sourceArgs(image_path),
    '--blockdev', `driver=file,node-name=target-file,filename=${target_path}`,
    '--blockdev', 'driver=raw,node-name=target,file=target-file',
    '--blockdev', 'driver=copy-before-write,node-name=cbw,file=source,target=target',
    '--blockdev', 'driver=snapshot-access,node-name=fleece,file=cbw',
    ...nbdServerArgs(socket_path),
    '--export', `type=nbd,id=export-volume,node-name=cbw,name=${QSD_VOLUME_EXPORT},writable=on`,
    '--export', `type=nbd,id=export-image,node-name=fleece,name=${QSD_IMAGE_EXPORT}`,
  ];
}

/** nbdkit's file plugin in the foreground (the pid we measure is the server's), one export "". */
export function nbdkitArgs(image_path: string, socket_path: string): string[] {
  return ['--foreground', '--exit-with-parent', '--unix', socket_path, 'file', image_path];
}

/** Export URIs: the NBD frontend's own encoder (`@` in NAME@ID percent-encoded), which libnbd and fio read. */
export { unixUri } from '../../src/frontends/nbd/uri';
