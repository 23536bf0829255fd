/* vzprobe: system calls that busybox does not make, for tests to run
 * inside a VPS (a static binary: a busybox VPS has no C library).
 *
 *   vzprobe mount_setattr_rw PATH   clear MOUNT_ATTR_RDONLY on the mount at PATH
 *   vzprobe fspick_rw PATH          fspick + fsconfig(rw) + reconfigure
 *
 * Prints "ok", or the failing call and its errno; exits 0 on success. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define MOUNT_ATTR_RDONLY 0x00000001
#define FSCONFIG_SET_FLAG 0
#define FSCONFIG_CMD_RECONFIGURE 7

struct mount_attr {
    uint64_t attr_set, attr_clr, propagation, userns_fd;
};

static int fail(const char *call) {
    printf("%s: errno %d (%s)\n", call, errno, strerror(errno));
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: vzprobe mount_setattr_rw|fspick_rw PATH\n");
        return 2;
    }
    if (strcmp(argv[1], "mount_setattr_rw") == 0) {
        struct mount_attr attr = {.attr_clr = MOUNT_ATTR_RDONLY};
        if (syscall(SYS_mount_setattr, AT_FDCWD, argv[2], 0, &attr, sizeof attr) < 0)
            return fail("mount_setattr");
    } else if (strcmp(argv[1], "fspick_rw") == 0) {
        long fd = syscall(SYS_fspick, AT_FDCWD, argv[2], 0);
        if (fd < 0)
            return fail("fspick");
        if (syscall(SYS_fsconfig, fd, FSCONFIG_SET_FLAG, "rw", NULL, 0) < 0)
            return fail("fsconfig rw");
        if (syscall(SYS_fsconfig, fd, FSCONFIG_CMD_RECONFIGURE, NULL, NULL, 0) < 0)
            return fail("fsconfig reconfigure");
    } else {
        fprintf(stderr, "vzprobe: unknown call %s\n", argv[1]);
        return 2;
    }
    puts("ok");
    return 0;
}
