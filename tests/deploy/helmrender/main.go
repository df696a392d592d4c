// helmrender: renders a Helm v3 chart the way `helm template` does, for tests on machines
// without a helm binary (Debian packages none). Built on Go's text/template and Debian's
// Masterminds sprig, it implements the parts of Helm's engine a chart relies on:
//
//   - values: the chart's values.yaml, then each --values file, then --set/--set-string, deep
//     merged in that order (a null removes a key), checked against values.schema.json with
//     gojsonschema and Helm's error text ("values don't meet the specifications ...");
//   - objects: .Values, .Release (Name, Namespace, Revision, IsInstall, IsUpgrade, Service),
//     .Chart (Chart.yaml, Helm's field names), .Capabilities (KubeVersion, APIVersions.Has,
//     HelmVersion), .Template (Name, BasePath), .Files (Get);
//   - functions: sprig's (without env/expandenv), include, tpl, required, fail, toYaml,
//     fromYaml, toJson, fromJson, toToml-free; lookup answers an empty map as in
//     `helm template`;
//   - rendering: every templates/ file is parsed into one set; files whose name starts with
//     "_" only define templates; NOTES.txt is rendered on request; "<no value>" becomes "";
//     each rendered manifest must be valid YAML; the chart's kubeVersion constraint is checked.
//
// Usage:
//
//	helmrender --chart DIR [--values FILE]... [--set K=V]... [--set-string K=V]...
//	           [--release-name N] [--namespace NS] [--kube-version V] [--api-versions G/V]...
//	           [--output yaml|json] [--notes]
//
// yaml output is `helm template`'s ("---\n# Source: CHART/templates/FILE\n..."); json output
// is one JSON array of the rendered objects (for C++ tests). Errors go to stderr, exit 1.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"text/template"

	"github.com/Masterminds/semver/v3"
	"github.com/Masterminds/sprig/v3"
	"github.com/xeipuuv/gojsonschema"
	"sigs.k8s.io/yaml"
)

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// ChartMetadata is Chart.yaml with Helm's template field names (.Chart.Name, ...).
type ChartMetadata struct {
	APIVersion   string                   `json:"apiVersion"`
	Name         string                   `json:"name"`
	Version      string                   `json:"version"`
	AppVersion   string                   `json:"appVersion,omitempty"`
	KubeVersion  string                   `json:"kubeVersion,omitempty"`
	Description  string                   `json:"description,omitempty"`
	Type         string                   `json:"type,omitempty"`
	Keywords     []string                 `json:"keywords,omitempty"`
	Home         string                   `json:"home,omitempty"`
	Sources      []string                 `json:"sources,omitempty"`
	Icon         string                   `json:"icon,omitempty"`
	Deprecated   bool                     `json:"deprecated,omitempty"`
	Annotations  map[string]string        `json:"annotations,omitempty"`
	Maintainers  []map[string]interface{} `json:"maintainers,omitempty"`
	Dependencies []map[string]interface{} `json:"dependencies,omitempty"`
}

// KubeVersion is .Capabilities.KubeVersion.
type KubeVersion struct {
	Version    string
	Major      string
	Minor      string
	GitVersion string
}

func (k KubeVersion) String() string { return k.Version }

// VersionSet is .Capabilities.APIVersions.
type VersionSet []string

// Has reports whether "group/version" or "group/version/Kind" is available, as Helm's.
func (v VersionSet) Has(apiVersion string) bool {
	for _, x := range v {
		if x == apiVersion {
			return true
		}
	}
	return false
}

// Capabilities is .Capabilities.
type Capabilities struct {
	KubeVersion  KubeVersion
	APIVersions  VersionSet
	HelmVersion  map[string]string
}

// Files is .Files (Get of a chart file by relative path).
type Files map[string][]byte

func (f Files) Get(name string) string { return string(f[name]) }

func fail(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "Error: "+format+"\n", args...)
	os.Exit(1)
}

// mergeValues deep-merges src over dst (maps merge; a nil in src deletes the key).
func mergeValues(dst, src map[string]interface{}) map[string]interface{} {
	for k, v := range src {
		if v == nil {
			delete(dst, k)
			continue
		}
		if sm, ok := v.(map[string]interface{}); ok {
			if dm, ok := dst[k].(map[string]interface{}); ok {
				dst[k] = mergeValues(dm, sm)
				continue
			}
		}
		dst[k] = v
	}
	return dst
}

func readYAMLMap(path string) (map[string]interface{}, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	out := map[string]interface{}{}
	if err := yaml.Unmarshal(data, &out); err != nil {
		return nil, fmt.Errorf("failed to parse %s: %w", path, err)
	}
	if out == nil {
		out = map[string]interface{}{}
	}
	return out, nil
}

// setValue applies one --set (typed: int, float, bool, null, else string) or --set-string.
func setValue(vals map[string]interface{}, assignment string, asString bool) error {
	eq := strings.Index(assignment, "=")
	if eq <= 0 {
		return fmt.Errorf("key %q has no value", assignment)
	}
	path, raw := strings.Split(assignment[:eq], "."), assignment[eq+1:]
	var value interface{} = raw
	if !asString {
		if i, err := strconv.ParseInt(raw, 10, 64); err == nil {
			value = i
		} else if b, err := strconv.ParseBool(raw); err == nil {
			value = b
		} else if raw == "null" {
			value = nil
		}
	}
	m := vals
	for _, k := range path[:len(path)-1] {
		next, ok := m[k].(map[string]interface{})
		if !ok {
			next = map[string]interface{}{}
			m[k] = next
		}
		m = next
	}
	if value == nil {
		delete(m, path[len(path)-1])
	} else {
		m[path[len(path)-1]] = value
	}
	return nil
}

// validateSchema checks the final values against values.schema.json, with Helm's message.
func validateSchema(chartName, schemaPath string, vals map[string]interface{}) error {
	schema, err := os.ReadFile(schemaPath)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	} else if err != nil {
		return err
	}
	doc, err := json.Marshal(vals)
	if err != nil {
		return err
	}
	result, err := gojsonschema.Validate(gojsonschema.NewBytesLoader(schema),
		gojsonschema.NewBytesLoader(doc))
	if err != nil {
		return fmt.Errorf("%s: invalid values.schema.json: %w", chartName, err)
	}
	if result.Valid() {
		return nil
	}
	var sb strings.Builder
	sb.WriteString("values don't meet the specifications of the schema(s) in the following chart(s):\n")
	sb.WriteString(chartName + ":\n")
	for _, e := range result.Errors() {
		sb.WriteString(fmt.Sprintf("- %s\n", e))
	}
	return errors.New(sb.String())
}

const (
	warnStart = "HELMRENDER_ERR_START"
	warnEnd   = "HELMRENDER_ERR_END"
)

var execErrLocation = regexp.MustCompile(`^template: (.*?): executing "[^"]*" at <[^>]*>: error calling [a-z]+: `)

// cleanExecError turns a `required`/`fail` error into Helm's "execution error at (FILE:L:C): MSG".
func cleanExecError(err error) error {
	msg := err.Error()
	start, end := strings.Index(msg, warnStart), strings.Index(msg, warnEnd)
	if start < 0 || end < start {
		return err
	}
	location := ""
	if m := execErrLocation.FindStringSubmatch(msg); m != nil {
		location = m[1]
	}
	return fmt.Errorf("execution error at (%s): %s", location, msg[start+len(warnStart):end])
}

func toYAML(v interface{}) string {
	data, err := yaml.Marshal(v)
	if err != nil {
		return ""
	}
	return strings.TrimSuffix(string(data), "\n")
}

func fromYAML(s string) map[string]interface{} {
	m := map[string]interface{}{}
	if err := yaml.Unmarshal([]byte(s), &m); err != nil {
		m["Error"] = err.Error()
	}
	return m
}

func toJSON(v interface{}) string {
	data, err := json.Marshal(v)
	if err != nil {
		return ""
	}
	return string(data)
}

func fromJSON(s string) map[string]interface{} {
	m := map[string]interface{}{}
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		m["Error"] = err.Error()
	}
	return m
}

const recursionMax = 1000

func includeFunc(t *template.Template, depth map[string]int) func(string, interface{}) (string, error) {
	return func(name string, data interface{}) (string, error) {
		if depth[name] > recursionMax {
			return "", fmt.Errorf("rendering template has a nested reference name: %s", name)
		}
		depth[name]++
		defer func() { depth[name]-- }()
		var buf strings.Builder
		err := t.ExecuteTemplate(&buf, name, data)
		return buf.String(), err
	}
}

func tplFunc(parent *template.Template, depth map[string]int) func(string, interface{}) (string, error) {
	return func(text string, data interface{}) (string, error) {
		t, err := parent.Clone()
		if err != nil {
			return "", err
		}
		t.Option("missingkey=zero")
		t.Funcs(template.FuncMap{"include": includeFunc(t, depth), "tpl": tplFunc(t, depth)})
		t, err = t.New(parent.Name()).Parse(text)
		if err != nil {
			return "", fmt.Errorf("cannot parse template %q: %w", text, err)
		}
		var buf strings.Builder
		if err := t.Execute(&buf, data); err != nil {
			return "", fmt.Errorf("error during tpl function execution for %q: %w", text, err)
		}
		return strings.ReplaceAll(buf.String(), "<no value>", ""), nil
	}
}

func funcMap() template.FuncMap {
	f := sprig.TxtFuncMap()
	delete(f, "env")
	delete(f, "expandenv")
	f["toYaml"] = toYAML
	f["fromYaml"] = fromYAML
	f["toJson"] = toJSON
	f["fromJson"] = fromJSON
	f["required"] = func(warn string, val interface{}) (interface{}, error) {
		if val == nil {
			return val, errors.New(warnStart + warn + warnEnd)
		}
		if s, ok := val.(string); ok && s == "" {
			return val, errors.New(warnStart + warn + warnEnd)
		}
		return val, nil
	}
	f["fail"] = func(msg string) (string, error) { return "", errors.New(warnStart + msg + warnEnd) }
	f["lookup"] = func(string, string, string, string) (map[string]interface{}, error) {
		return map[string]interface{}{}, nil
	}
	// Placeholders, replaced once the template set exists.
	f["include"] = func(string, interface{}) string { return "" }
	f["tpl"] = func(string, interface{}) string { return "" }
	return f
}

type rendered struct {
	name    string // CHART/templates/FILE
	content string
}

func main() {
	var valueFiles, sets, setStrings, apiVersions multiFlag
	chartDir := flag.String("chart", "", "chart directory")
	releaseName := flag.String("release-name", "lazypull", "release name")
	namespace := flag.String("namespace", "default", "release namespace")
	kubeVersion := flag.String("kube-version", "1.29.0", "Kubernetes version of .Capabilities")
	output := flag.String("output", "yaml", "yaml | json")
	notes := flag.Bool("notes", false, "print the rendered NOTES.txt instead of the manifests")
	flag.Var(&valueFiles, "values", "values file (repeatable)")
	flag.Var(&sets, "set", "KEY=VALUE (repeatable)")
	flag.Var(&setStrings, "set-string", "KEY=VALUE kept as a string (repeatable)")
	flag.Var(&apiVersions, "api-versions", "extra API version of .Capabilities (repeatable)")
	flag.Parse()
	if *chartDir == "" {
		fail("--chart is required")
	}

	// Chart.yaml
	var meta ChartMetadata
	data, err := os.ReadFile(filepath.Join(*chartDir, "Chart.yaml"))
	if err != nil {
		fail("%v", err)
	}
	if err := yaml.Unmarshal(data, &meta); err != nil {
		fail("Chart.yaml: %v", err)
	}
	if meta.APIVersion != "v2" {
		fail("Chart.yaml: apiVersion must be v2, not %q", meta.APIVersion)
	}
	if meta.Name == "" || meta.Version == "" {
		fail("Chart.yaml: name and version are required")
	}
	if _, err := semver.StrictNewVersion(meta.Version); err != nil {
		fail("Chart.yaml: version %q is not SemVer 2: %v", meta.Version, err)
	}

	kv, err := semver.NewVersion(*kubeVersion)
	if err != nil {
		fail("--kube-version: %v", err)
	}
	caps := Capabilities{
		KubeVersion: KubeVersion{
			Version:    "v" + kv.String(),
			Major:      strconv.FormatUint(kv.Major(), 10),
			Minor:      strconv.FormatUint(kv.Minor(), 10),
			GitVersion: "v" + kv.String(),
		},
		APIVersions: append(VersionSet{"v1", "apps/v1", "policy/v1", "rbac.authorization.k8s.io/v1",
			"scheduling.k8s.io/v1"}, apiVersions...),
		HelmVersion: map[string]string{"Version": "v3-compatible (helmrender)"},
	}
	if meta.KubeVersion != "" {
		c, err := semver.NewConstraint(meta.KubeVersion)
		if err != nil {
			fail("Chart.yaml: kubeVersion %q: %v", meta.KubeVersion, err)
		}
		if !c.Check(kv) {
			fail("chart requires kubeVersion: %s which is incompatible with Kubernetes %s",
				meta.KubeVersion, caps.KubeVersion.Version)
		}
	}

	// Values.
	vals, err := readYAMLMap(filepath.Join(*chartDir, "values.yaml"))
	if err != nil {
		fail("%v", err)
	}
	for _, f := range valueFiles {
		user, err := readYAMLMap(f)
		if err != nil {
			fail("%v", err)
		}
		vals = mergeValues(vals, user)
	}
	for _, s := range sets {
		if err := setValue(vals, s, false); err != nil {
			fail("failed parsing --set data: %v", err)
		}
	}
	for _, s := range setStrings {
		if err := setValue(vals, s, true); err != nil {
			fail("failed parsing --set-string data: %v", err)
		}
	}
	if err := validateSchema(meta.Name, filepath.Join(*chartDir, "values.schema.json"), vals); err != nil {
		fail("%v", err)
	}

	// Templates: one set; paths are CHART/templates/FILE as in Helm.
	files := Files{}
	filepath.Walk(*chartDir, func(path string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			rel, _ := filepath.Rel(*chartDir, path)
			if b, err := os.ReadFile(path); err == nil {
				files[rel] = b
			}
		}
		return nil
	})
	var names []string
	for rel := range files {
		if strings.HasPrefix(rel, "templates/") {
			names = append(names, rel)
		}
	}
	sort.Strings(names)
	depth := map[string]int{}
	root := template.New("gotpl").Funcs(funcMap())
	root.Option("missingkey=zero")
	root.Funcs(template.FuncMap{"include": includeFunc(root, depth), "tpl": tplFunc(root, depth)})
	for _, rel := range names {
		full := meta.Name + "/" + rel
		if _, err := root.New(full).Parse(string(files[rel])); err != nil {
			fail("parse error at (%s): %v", full, err)
		}
	}
	top := map[string]interface{}{
		"Values": vals,
		"Release": map[string]interface{}{
			"Name": *releaseName, "Namespace": *namespace, "Revision": 1,
			"IsInstall": true, "IsUpgrade": false, "Service": "Helm",
		},
		"Chart":        meta,
		"Capabilities": caps,
		"Files":        files,
	}

	var out []rendered
	for _, rel := range names {
		base := filepath.Base(rel)
		isNotes := base == "NOTES.txt"
		if strings.HasPrefix(base, "_") || isNotes != *notes {
			continue
		}
		full := meta.Name + "/" + rel
		top["Template"] = map[string]interface{}{"Name": full, "BasePath": meta.Name + "/templates"}
		var buf bytes.Buffer
		if err := root.ExecuteTemplate(&buf, full, top); err != nil {
			fail("%v", cleanExecError(err))
		}
		out = append(out, rendered{full, strings.ReplaceAll(buf.String(), "<no value>", "")})
	}

	if *notes {
		for _, r := range out {
			fmt.Print(r.content)
		}
		return
	}
	var objects []interface{}
	var text strings.Builder
	for _, r := range out {
		for _, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(r.content, -1) {
			if strings.TrimSpace(doc) == "" {
				continue
			}
			var obj map[string]interface{}
			if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
				fail("YAML parse error on %s: %v", r.name, err)
			}
			if obj == nil {
				continue // only comments
			}
			objects = append(objects, obj)
			text.WriteString("---\n# Source: " + r.name + "\n" + strings.TrimSpace(doc) + "\n")
		}
	}
	if *output == "json" {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(objects); err != nil {
			fail("%v", err)
		}
		return
	}
	fmt.Print(text.String())
}
