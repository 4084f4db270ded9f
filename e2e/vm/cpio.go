package vm

import (
	"bufio"
	"fmt"
	"io"
	"io/fs"
	"path"
	"sort"
	"strings"
)

// archiveFile is one regular file for the per-run initramfs part.
type archiveFile struct {
	name string // path inside the VM, without the leading slash
	mode fs.FileMode
	data io.Reader
	size int64
}

// writeCPIO writes files as an uncompressed "newc" cpio archive, the format
// the kernel unpacks into its initramfs. Parent directories are emitted before
// the files in them, because the kernel does not create them on its own.
func writeCPIO(w io.Writer, files []archiveFile) error {
	bw := bufio.NewWriter(w)
	cw := &cpioWriter{w: bw, ino: 1}

	sort.Slice(files, func(i, j int) bool { return files[i].name < files[j].name })
	dirs := map[string]bool{}
	for _, f := range files {
		for _, dir := range parentDirs(f.name) {
			if dirs[dir] {
				continue
			}
			dirs[dir] = true
			if err := cw.entry(dir, 0o040755, 2, 0, nil); err != nil {
				return err
			}
		}
		if err := cw.entry(f.name, 0o100000|uint32(f.mode.Perm()), 1, f.size, f.data); err != nil {
			return err
		}
	}
	if err := cw.entry("TRAILER!!!", 0, 1, 0, nil); err != nil {
		return err
	}
	return bw.Flush()
}

// parentDirs lists the directories above name, outermost first:
// "a/b/c" gives ["a", "a/b"].
func parentDirs(name string) []string {
	var dirs []string
	for dir := path.Dir(name); dir != "." && dir != "/"; dir = path.Dir(dir) {
		dirs = append(dirs, dir)
	}
	for i, j := 0, len(dirs)-1; i < j; i, j = i+1, j-1 {
		dirs[i], dirs[j] = dirs[j], dirs[i]
	}
	return dirs
}

type cpioWriter struct {
	w   io.Writer
	ino uint32
	off int64
}

func (c *cpioWriter) entry(name string, mode, nlink uint32, size int64, data io.Reader) error {
	name = strings.TrimPrefix(name, "/")
	if size > 0xffffffff {
		return fmt.Errorf("cpio: %s is %d bytes, more than newc can hold", name, size)
	}
	header := fmt.Sprintf("070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		c.ino, mode, 0, 0, nlink, 0, size, 0, 0, 0, 0, len(name)+1, 0)
	c.ino++
	if err := c.write([]byte(header + name + "\x00")); err != nil {
		return fmt.Errorf("cpio: header of %s: %w", name, err)
	}
	if err := c.pad(); err != nil {
		return err
	}
	if data != nil {
		n, err := io.Copy(c.w, data)
		c.off += n
		if err != nil {
			return fmt.Errorf("cpio: contents of %s: %w", name, err)
		}
		if n != size {
			return fmt.Errorf("cpio: %s: wrote %d bytes, expected %d", name, n, size)
		}
	}
	return c.pad()
}

func (c *cpioWriter) write(b []byte) error {
	n, err := c.w.Write(b)
	c.off += int64(n)
	return err
}

// pad aligns the archive to four bytes, as newc requires after each header
// and each file's data.
func (c *cpioWriter) pad() error {
	if rem := c.off % 4; rem != 0 {
		return c.write(make([]byte, 4-rem))
	}
	return nil
}
