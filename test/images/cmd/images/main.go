package main

import (
	"flag"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/portcullis/portcullis/test/images"
)

func main() {
	var in images.Inputs
	var opts images.Options
	var debian string
	flag.StringVar(&opts.Dir, "out", "bin/images", "directory for the tarballs")
	flag.StringVar(&opts.Tag, "tag", "latest", "tag of every image")
	flag.BoolVar(&opts.Gzip, "gzip", true, "compress the layers")
	flag.StringVar(&in.Portcullis, "portcullis", "bin/portcullis", "the portcullis binary (static)")
	flag.StringVar(&in.Agent, "agent", "bin/portcullis-agent", "the sidecar build of portcullis (-tags agentonly)")
	flag.StringVar(&in.Pause, "pause", "bin/pause", "the pause binary (test/images/pause)")
	flag.StringVar(&in.Envoy, "envoy", ".cache/bin/envoy", "the Envoy binary")
	flag.StringVar(&in.Jaeger, "jaeger", "", "the Jaeger binary (make jaeger), for an image named as deploy/ names Jaeger's; none when empty")
	flag.StringVar(&in.JaegerUI, "jaeger-ui", "", "the Jaeger UI's build (make jaeger), which the Jaeger image serves; required with -jaeger")
	flag.StringVar(&debian, "debian", ".cache/debroot", "dpkg -x root of images.DebianPackages (test/kube/fetch-debs.sh)")
	listDebian := flag.Bool("debian-packages", false, "print the Debian packages -debian must hold, and exit")
	flag.Parse()
	if *listDebian {
		fmt.Println(strings.Join(images.DebianPackages, " "))
		return
	}
	in.Debian = images.RootFS(debian)
	if err := run(in, opts); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run(in images.Inputs, opts images.Options) error {
	specs, err := images.Project(in)
	if err != nil {
		return err
	}
	results, err := images.Write(specs, opts)
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "IMAGE\tDIGEST\tTARBALL\tCONTENT\tFILE")
	for _, r := range results {
		fmt.Fprintf(w, "%s\t%s\t%.1f MiB\t%.1f MiB\t%s\n", r.Ref, r.Digest, mib(r.Bytes), mib(r.Layers), r.Path)
	}
	return w.Flush()
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }
