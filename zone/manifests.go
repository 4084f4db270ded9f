package zone

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	goruntime "runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/fsnotify/fsnotify"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"sigs.k8s.io/yaml"
)

// ManifestSource serves the objects found in a file or a folder of Kubernetes
// manifests (YAML or JSON; multi-document files and kind: List too). The path
// is watched: every change is re-read and published. A file that fails to parse
// is reported with its name and line, and the objects it last held keep being
// served, so a bad edit loses nothing.
type ManifestSource struct {
	Path string
	// Debounce groups bursts of file events (an editor writing a file makes
	// several); zero means 100ms.
	Debounce time.Duration
	Logger   *slog.Logger
}

// manifestObjects is what one file contributed.
type manifestObjects struct {
	services   []*Service
	slices     []*EndpointSlice
	pods       []*Pod
	namespaces []*Namespace
	nodes      []*Node
}

// Run loads the manifests, publishes them, then watches for changes until ctx
// ends. It fails only when the path cannot be read or watched at all; an error
// inside a file is logged and that file's last good objects stay.
func (m *ManifestSource) Run(ctx context.Context, publish func(*Cluster)) error {
	log := m.Logger
	if log == nil {
		log = slog.Default()
	}
	debounce := m.Debounce
	if debounce <= 0 {
		debounce = 100 * time.Millisecond
	}
	watcher, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("manifests: watch %s: %w", m.Path, err)
	}
	defer watcher.Close()

	set := newManifestSet(log)
	dirs := make(map[string]bool) // the folders watched
	// rescan reads every file again: at start, and when a folder appears,
	// goes or is swapped (a ConfigMap's ..data link), or events were lost.
	rescan := func() error {
		files, found, err := listManifests(m.Path)
		if err != nil {
			return err
		}
		clear(dirs)
		for _, d := range found {
			// Adding a directory twice is harmless.
			if err := watcher.Add(d); err != nil {
				return fmt.Errorf("manifests: watch %s: %w", d, err)
			}
			dirs[d] = true
		}
		present := make(map[string]bool, len(files))
		changes := make(map[string]*manifestObjects, len(files))
		for i, objs := range m.parseAll(files, set, log) {
			present[files[i]] = true
			if objs != nil {
				changes[files[i]] = objs
			}
		}
		for _, f := range set.Files() {
			if !present[f] {
				changes[f] = nil
			}
		}
		set.Apply(changes)
		return nil
	}
	if err := rescan(); err != nil {
		return err
	}
	publish(set.b.Snapshot())

	single := !dirs[m.Path] // the path is one file
	pending := make(map[string]bool)
	full := false
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case ev, ok := <-watcher.Events:
			if !ok {
				return nil
			}
			log.Debug("manifest change", "file", ev.Name, "op", ev.Op.String())
			if single {
				full = true
			} else {
				pending[ev.Name] = true
			}
			timer.Reset(debounce)
		case err, ok := <-watcher.Errors:
			if !ok {
				return nil
			}
			log.Error("manifests: watch error; reading every file again", "err", err)
			full = true
			timer.Reset(debounce)
		case <-timer.C:
			changes := make(map[string]*manifestObjects, len(pending))
			for p := range pending {
				if m.needsRescan(p, dirs) {
					full = true
					break
				}
				if !isManifestName(p) || hiddenBelow(m.Path, p) {
					continue
				}
				if _, err := os.Stat(p); errors.Is(err, fs.ErrNotExist) {
					if set.Has(p) {
						changes[p] = nil
					}
					continue
				}
				if objs, ok := m.parse(p, set, log); ok {
					changes[p] = objs
				}
			}
			clear(pending)
			if full {
				full = false
				if err := rescan(); err != nil {
					log.Error("manifests: reload failed; serving the previous state", "err", err)
					continue
				}
			} else {
				set.Apply(changes)
			}
			if set.b.Dirty() {
				publish(set.b.Snapshot())
			}
		}
	}
}

// parseAll parses files on every core (a first load of a large folder is
// mostly YAML decoding); a nil entry is a file rejected.
func (m *ManifestSource) parseAll(files []string, set *manifestSet, log *slog.Logger) []*manifestObjects {
	out := make([]*manifestObjects, len(files))
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(goruntime.GOMAXPROCS(0), len(files)) {
		wg.Go(func() {
			for i := range next {
				out[i], _ = m.parse(files[i], set, log)
			}
		})
	}
	for i := range files {
		next <- i
	}
	close(next)
	wg.Wait()
	return out
}

// parse reads one file, logging a rejection; ok is false when the file's
// previous objects (if any) must stay.
func (m *ManifestSource) parse(f string, set *manifestSet, log *slog.Logger) (*manifestObjects, bool) {
	objs, err := parseManifestFile(f, log)
	if err != nil {
		if set.Has(f) {
			log.Error("manifest rejected; serving its previous contents", "err", err)
		} else {
			log.Error("manifest rejected", "err", err)
		}
		return nil, false
	}
	return &objs, true
}

// needsRescan reports whether an event on path p can change more than the
// file it names: a folder created, removed or renamed (a watched one, or a
// hidden one such as a ConfigMap's ..data link being swapped).
func (m *ManifestSource) needsRescan(p string, dirs map[string]bool) bool {
	if dirs[p] {
		return true
	}
	info, err := os.Stat(p)
	return err == nil && info.IsDir()
}

// isManifestName reports whether a file name is one a folder is read for.
func isManifestName(p string) bool {
	switch strings.ToLower(filepath.Ext(p)) {
	case ".yaml", ".yml", ".json":
		return true
	}
	return false
}

// hiddenBelow reports whether p, under root, has a hidden part: such files
// are not read (an editor's temporary file, a ConfigMap's timestamped data).
func hiddenBelow(root, p string) bool {
	rel, err := filepath.Rel(root, p)
	if err != nil {
		return true
	}
	for _, part := range strings.Split(rel, string(filepath.Separator)) {
		if strings.HasPrefix(part, ".") {
			return true
		}
	}
	return false
}

// listManifests returns the manifest files under path (or path itself) and the
// directories to watch. Hidden files and folders are skipped, but a folder
// holding a ConfigMap-style "..data" link is still watched so swaps are seen.
func listManifests(path string) (files, dirs []string, err error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, nil, fmt.Errorf("manifests: %w", err)
	}
	if !info.IsDir() {
		return []string{path}, []string{filepath.Dir(path)}, nil
	}
	err = filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if p != path && strings.HasPrefix(name, ".") {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			dirs = append(dirs, p)
			return nil
		}
		if isManifestName(name) {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("manifests: %w", err)
	}
	sort.Strings(files)
	return files, dirs, nil
}

// document is one YAML document of a file and the line it starts on.
type document struct {
	body []byte
	line int
}

// splitDocuments cuts a multi-document YAML stream at "---" lines, keeping
// each document's first line number for error messages.
func splitDocuments(data []byte) []document {
	var docs []document
	start, line := 1, 1
	var cur bytes.Buffer
	for _, l := range bytes.SplitAfter(data, []byte("\n")) {
		trimmed := bytes.TrimRight(l, " \t\r\n")
		if bytes.Equal(trimmed, []byte("---")) || bytes.HasPrefix(trimmed, []byte("--- ")) {
			docs = append(docs, document{body: bytes.Clone(cur.Bytes()), line: start})
			cur.Reset()
			start = line + 1
		} else {
			cur.Write(l)
		}
		line++
	}
	docs = append(docs, document{body: cur.Bytes(), line: start})
	return docs
}

var yamlLine = regexp.MustCompile(`line (\d+)`)

// syntaxError reports a YAML syntax error at its absolute line: the YAML
// parser counts lines from the start of the document. A line it names
// outside the document (it should not) falls back to the document's first.
func syntaxError(file string, doc document, err error) error {
	line := doc.line
	msg := err.Error()
	if m := yamlLine.FindStringSubmatchIndex(msg); m != nil {
		n, _ := strconv.Atoi(msg[m[2]:m[3]])
		if n >= 1 && n <= bytes.Count(doc.body, []byte("\n"))+1 {
			line = doc.line + n - 1
			msg = strings.Join(strings.Fields(msg[:m[0]]+strings.TrimPrefix(msg[m[1]:], ":")), " ")
		}
	}
	return fmt.Errorf("%s:%d: %s", file, line, msg)
}

func parseManifestFile(file string, log *slog.Logger) (manifestObjects, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return manifestObjects{}, fmt.Errorf("manifests: %w", err)
	}
	return parseManifests(file, data, log)
}

// parseManifests reads the objects of one file's contents; file names it in
// errors, which start with FILE:LINE.
func parseManifests(file string, data []byte, log *slog.Logger) (manifestObjects, error) {
	var out manifestObjects
	for _, doc := range splitDocuments(data) {
		if len(bytes.TrimSpace(stripComments(doc.body))) == 0 {
			continue
		}
		js, err := yaml.YAMLToJSON(doc.body)
		if err != nil {
			return out, syntaxError(file, doc, err)
		}
		if err := decodeInto(&out, js, log, file, doc); err != nil {
			return out, fmt.Errorf("%s:%d: %w", file, doc.line, err)
		}
	}
	return out, nil
}

func stripComments(b []byte) []byte {
	var out []byte
	for _, l := range bytes.Split(b, []byte("\n")) {
		if t := bytes.TrimSpace(l); len(t) > 0 && t[0] != '#' {
			out = append(out, l...)
		}
	}
	return out
}

// decodeInto decodes one JSON object (or a List of them) and keeps the kinds
// the model holds. Its errors say what is wrong; the caller adds where.
func decodeInto(out *manifestObjects, js []byte, log *slog.Logger, file string, doc document) error {
	var meta metav1.TypeMeta
	if err := yaml.Unmarshal(js, &meta); err != nil {
		return err
	}
	if meta.Kind == "" || meta.APIVersion == "" {
		return errors.New("object has no kind or apiVersion")
	}
	if meta.Kind == "List" || strings.HasSuffix(meta.Kind, "List") && meta.APIVersion == "v1" {
		var list corev1.List
		if err := yaml.Unmarshal(js, &list); err != nil {
			return err
		}
		for i, item := range list.Items {
			if err := decodeInto(out, item.Raw, log, file, doc); err != nil {
				return fmt.Errorf("item %d: %w", i, err)
			}
		}
		return nil
	}
	switch meta.GroupVersionKind().GroupKind().String() {
	case "Service", "Pod", "Namespace", "Node", "EndpointSlice.discovery.k8s.io":
	default:
		log.Debug("manifest object skipped", "file", file, "line", doc.line, "kind", meta.Kind)
		return nil
	}
	obj, _, err := manifestDecoder().Decode(js, nil, nil)
	if err != nil {
		return err
	}
	return keep(out, obj)
}

// manifestDecoder reads the kinds a manifests folder contributes.
var manifestDecoder = sync.OnceValue(func() runtime.Decoder {
	return serializer.NewCodecFactory(newAPIScheme()).UniversalDeserializer()
})

func keep(out *manifestObjects, obj runtime.Object) error {
	switch o := obj.(type) {
	case *corev1.Service:
		defaultNamespace(&o.ObjectMeta)
		if err := checkService(o); err != nil {
			return err
		}
		out.services = append(out.services, ServiceFromAPI(o))
	case *discoveryv1.EndpointSlice:
		defaultNamespace(&o.ObjectMeta)
		if o.Labels[ServiceNameLabel] == "" {
			return fmt.Errorf("EndpointSlice %s/%s has no %s label", o.Namespace, o.Name, ServiceNameLabel)
		}
		out.slices = append(out.slices, SliceFromAPI(o))
	case *corev1.Pod:
		defaultNamespace(&o.ObjectMeta)
		out.pods = append(out.pods, PodFromAPI(o))
	case *corev1.Namespace:
		out.namespaces = append(out.namespaces, NamespaceFromAPI(o))
	case *corev1.Node:
		out.nodes = append(out.nodes, NodeFromAPI(o))
	}
	return nil
}

func defaultNamespace(m *metav1.ObjectMeta) {
	if m.Namespace == "" {
		m.Namespace = metav1.NamespaceDefault
	}
}

// checkService rejects what the API server would reject and the model would
// otherwise drop quietly.
func checkService(s *corev1.Service) error {
	if s.Name == "" {
		return errors.New("Service has no name")
	}
	ips := append([]string{s.Spec.ClusterIP}, s.Spec.ClusterIPs...)
	for _, ip := range ips {
		if ip == "" || ip == corev1.ClusterIPNone {
			continue
		}
		if _, err := parseAddr(ip); err != nil {
			return fmt.Errorf("Service %s/%s: clusterIP %q is not an IP address", s.Namespace, s.Name, ip)
		}
	}
	if s.Spec.Type == corev1.ServiceTypeExternalName && s.Spec.ExternalName == "" {
		return fmt.Errorf("Service %s/%s: type ExternalName needs spec.externalName", s.Namespace, s.Name)
	}
	return nil
}

// buildFromManifests merges the files' objects into one snapshot, as a
// manifests source's first load does.
func buildFromManifests(files map[string]manifestObjects, log *slog.Logger) *Cluster {
	set := newManifestSet(log)
	changes := make(map[string]*manifestObjects, len(files))
	for f, objs := range files {
		changes[f] = &objs
	}
	set.Apply(changes)
	return set.b.Snapshot()
}
