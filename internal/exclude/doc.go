// Package exclude finds the bytes of a guest disk that need not travel to the
// replica: Linux swap partitions (all but their first page, the swap header the
// guest needs to activate swap), the NTFS page, swap and hibernation files
// (\pagefile.sys, \swapfile.sys, \hiberfil.sys) and the files of a job's
// excluded guest paths. It reads the partition table (GPT, with its backup, or
// MBR with extended partitions), recognizes the filesystem of every partition,
// and reads NTFS master file tables and directory indexes itself, bounding the
// work and never trusting a count, offset or length it reads.
//
// A Linux swap area is recognized by the SWAPSPACE2 signature mkswap writes
// (page sizes 4, 8, 16 and 64 KiB), as the guest's kernel recognizes it,
// whatever the partition type says: a partition typed swap without the
// signature (or one hibernated into, whose signature differs) is reported
// and kept. A partition table is trusted only whole: overlapping partitions,
// a partition covering its own table, a looping chain of extended boot
// records are errors.
//
// What it excludes is only ever data a running guest can do without: never a
// partition table, a boot sector, filesystem metadata or resident file data.
// When a disk holds nothing it recognizes, Analyze reports no exclusions and no
// error; when a structure it recognized is damaged it reports an error and the
// caller sends every byte, which is always safe.
package exclude
