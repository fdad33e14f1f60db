package translate

import (
	"encoding/json"
	"fmt"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"
)

// YAML renders resources as a YAML list with sorted keys: stable for golden files and readable
// in `portcullis proxy config`.
func YAML[T proto.Message](msgs []T) ([]byte, error) {
	list := make([]json.RawMessage, len(msgs))
	for i, m := range msgs {
		b, err := protojson.Marshal(m)
		if err != nil {
			return nil, fmt.Errorf("translate: rendering %T: %w", m, err)
		}
		list[i] = b
	}
	raw, err := json.Marshal(list)
	if err != nil {
		return nil, fmt.Errorf("translate: rendering: %w", err)
	}
	out, err := yaml.JSONToYAML(raw)
	if err != nil {
		return nil, fmt.Errorf("translate: rendering: %w", err)
	}
	return out, nil
}
