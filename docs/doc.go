// Package docs holds the product's documentation: contract.md is its outside
// (processes, configuration keys, Temporal names, starter commands, metrics,
// the datastore layout), and the tests of this package hold it to the code.
package docs
