# Run in the test VM (crates/vmtest) by tests/kernel_written.rs: fills OCFS2
# volumes through the kernel's ocfs2 driver with the shapes a reader must
# handle, and writes a manifest of each into /out for the host to compare.
set -e

# A string of N copies of character C (no fork per byte: tr does it).
repeat() { head -c "$1" /dev/zero | tr '\0' "$2"; }

# fill SERIAL CLUSTER_BYTES XATTRS(yes|no) SPARSE(yes|no)
fill() {
    name=$1 cs=$2 xattrs=$3 sparse=$4
    m=/mnt/$name
    mkdir -p $m
    # resv_level=0 turns off per-inode allocation windows, so two files
    # appended in turns get interleaved clusters: one extent per cluster, more
    # than the inode holds, hence extent blocks.
    # Any option string must name a heartbeat mode (mount.ocfs2 adds
    # heartbeat=none for local volumes; busybox mount does not).
    mount -t ocfs2 -o heartbeat=none,resv_level=0 /dev/disk/by-serial/$name $m
    cd $m

    mkdir -p deep/1/2/3/4/5/6/7/8/9/10/11/12
    echo bottom > deep/1/2/3/4/5/6/7/8/9/10/11/12/leaf
    mkdir -p "names/with space" names/ünïcødé
    echo x > "names/with space/a b"
    echo y > names/$(repeat 255 n)

    # A big directory (indexed where the volume has indexed-dirs), with holes
    # left by deleted entries.
    mkdir big
    i=1
    while [ $i -le 2100 ]; do
        echo "entry $i" > big/file-with-a-longish-name-$i
        i=$((i + 1))
    done
    i=1
    while [ $i -le 2100 ]; do
        rm big/file-with-a-longish-name-$i
        i=$((i + 37))
    done

    : > empty
    echo hi > small
    head -c 3000 /dev/urandom > medium
    head -c 5000 /dev/urandom > over-inline
    dd if=/dev/urandom of=large bs=64k count=48 2>/dev/null

    # Two files appended in turns, each chunk numbered so misplaced clusters
    # show in the checksum.
    pad=$(repeat $((cs - 8)) a)
    i=0
    while [ $i -lt 260 ]; do
        printf '%08d%s' $i "$pad" >> frag-a
        printf '%08d%s' $i "$pad" >> frag-b
        i=$((i + 1))
    done
    printf 'tail' >> frag-a

    if [ $sparse = yes ]; then
        # Holes between written blocks, and a hole at the end.
        i=0
        while [ $i -lt 80 ]; do
            dd if=/dev/urandom of=sparse bs=4096 count=1 seek=$((i * 3 * cs / 4096 + 1)) conv=notrunc 2>/dev/null
            i=$((i + 1))
        done
        truncate -s $((300 * cs)) sparse
        # Preallocated (unwritten) space reads as zeros; part written over.
        fallocate -l $((8 * cs)) prealloc
        dd if=/dev/urandom of=prealloc bs=100 count=3 seek=7 conv=notrunc 2>/dev/null
    fi

    ln -s small fast-link
    ln -s deep/1/2/3/4/5/6/7/8/9/10/11/12/leaf deep-link
    ln -s $(repeat 4000 l) slow-link
    ln -s /dangling/target dangling
    ln small small-hard
    ln medium deep/1/medium-hard
    mkfifo fifo

    echo owned > owned
    chown 1234:5678 owned
    chmod 4750 owned
    chmod 600 medium
    chmod 1777 deep
    touch -d '2001-02-03 04:05:06' small

    if [ $xattrs = yes ]; then
        # In the inode (small ones), an empty and a binary value, every
        # namespace a plain user may not set, on a directory and a symlink.
        setfattr -n user.small -v v1 small
        setfattr -n user.empty small
        setfattr -n trusted.binary -v 0x00ff0a7f small
        setfattr -n security.label -v unconfined medium
        setfattr -n user.on-dir -v d deep
        setfattr -h -n trusted.on-link -v l fast-link
        # A value kept in clusters outside its entry.
        setfattr -n user.big -v $(repeat 3000 v) large
        # Enough for an xattr block.
        i=0
        while [ $i -lt 40 ]; do
            setfattr -n user.attr-$i -v value-$i-$(repeat 60 z) medium
            i=$((i + 1))
        done
        # More than a block holds: an xattr tree of buckets, some values in
        # them kept outside.
        : > many
        i=0
        while [ $i -lt 200 ]; do
            if [ $((i % 50)) = 7 ]; then
                v=$(repeat 300 w)-$i
            else
                v=value-$i
            fi
            setfattr -n user.many-attribute-$i -v "$v" many
            i=$((i + 1))
        done
        # Every attribute, hex encoded (file names in getfattr's escapes).
        find . -exec getfattr -h -d -m - -e hex {} + > /out/$name.xattrs
    fi

    # The manifest: attributes (above); checksums of regular files; symlink targets; then (last,
    # so the reads above have already moved every atime they will) mode (hex),
    # size, uid, gid, links, mtime, atime and ctime (seconds, then in full for
    # the nanoseconds) and name.
    find . -type f -exec sha256sum {} + > /out/$name.sha256
    find . -type l | while read -r p; do
        printf '%s|%s\n' "$p" "$(readlink "$p")"
    done > /out/$name.links
    find . -exec stat -c '%f|%s|%u|%g|%h|%Y|%y|%X|%x|%Z|%z|%n' {} + > /out/$name.stat

    cd /
    umount $m
    echo "$name filled"
}
