// Command benchmedian reads `go test -bench -count N` output on stdin and prints, per
// benchmark, the median of each metric (ns/op, B/op, allocs/op, and custom ones), so `make bench`
// reports medians without tools from outside the module.
package main

import (
	"bufio"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
)

func main() {
	type series struct {
		pkg     string
		metrics map[string][]float64
		units   []string
	}
	var order []string
	all := map[string]*series{}
	pkg := ""
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		line := sc.Text()
		if p, ok := strings.CutPrefix(line, "pkg: "); ok {
			pkg = p
			continue
		}
		f := strings.Fields(line)
		if len(f) < 4 || !strings.HasPrefix(f[0], "Benchmark") {
			continue
		}
		key := pkg + " " + f[0]
		s, ok := all[key]
		if !ok {
			s = &series{pkg: pkg, metrics: map[string][]float64{}}
			all[key] = s
			order = append(order, key)
		}
		for i := 2; i+1 < len(f); i += 2 {
			v, err := strconv.ParseFloat(f[i], 64)
			if err != nil {
				continue
			}
			unit := f[i+1]
			if _, seen := s.metrics[unit]; !seen {
				s.units = append(s.units, unit)
			}
			s.metrics[unit] = append(s.metrics[unit], v)
		}
	}
	if err := sc.Err(); err != nil {
		fmt.Fprintln(os.Stderr, "benchmedian:", err)
		os.Exit(1)
	}
	w := bufio.NewWriter(os.Stdout)
	defer w.Flush()
	fmt.Fprintln(w, "medians:")
	for _, key := range order {
		s := all[key]
		name := strings.TrimPrefix(key, s.pkg+" ")
		parts := []string{}
		n := 0
		for _, u := range s.units {
			vals := s.metrics[u]
			n = len(vals)
			parts = append(parts, fmt.Sprintf("%s %s", format(median(vals)), u))
		}
		fmt.Fprintf(w, "  %-44s %s  (n=%d, %s)\n", name, strings.Join(parts, "  "), n, s.pkg)
	}
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func format(v float64) string {
	if v >= 100 || v == float64(int64(v)) {
		return strconv.FormatFloat(v, 'f', 0, 64)
	}
	return strconv.FormatFloat(v, 'f', 2, 64)
}
