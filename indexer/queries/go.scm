; Tags for Go. Conventions: see indexer/tags.py.

; ---- definitions
(function_declaration name: (identifier) @name body: (block) @body) @definition.function
(function_declaration name: (identifier) @name) @definition.function
(method_declaration
  receiver: (parameter_list
    (parameter_declaration
      type: [
        (type_identifier) @receiver
        (pointer_type (type_identifier) @receiver)
        (generic_type type: (type_identifier) @receiver)
        (pointer_type (generic_type type: (type_identifier) @receiver))
      ]))
  name: (field_identifier) @name
  body: (block) @body) @definition.method
(type_spec name: (type_identifier) @name type: (struct_type (field_declaration_list) @body)) @definition.struct
(type_spec name: (type_identifier) @name type: (interface_type) @body) @definition.interface
(type_spec name: (type_identifier) @name) @definition.type
(type_alias name: (type_identifier) @name) @definition.type
(method_elem name: (field_identifier) @name) @definition.method
(field_declaration name: (field_identifier) @name) @definition.field
(source_file (const_declaration (const_spec name: (identifier) @name) @definition.constant))
(source_file (var_declaration (var_spec name: (identifier) @name) @definition.variable))
(source_file (var_declaration (var_spec_list (var_spec name: (identifier) @name) @definition.variable)))

; ---- references
(call_expression function: (identifier) @reference.call)
(call_expression function: (selector_expression field: (field_identifier) @reference.call))
(type_identifier) @reference.type
(selector_expression field: (field_identifier) @reference.name)
(identifier) @reference.name
(package_identifier) @reference.name

(parameter_declaration name: (identifier) @ignore)
(variadic_parameter_declaration name: (identifier) @ignore)
(package_clause) @ignore
(import_declaration) @ignore
(type_parameter_declaration name: (identifier) @ignore)
((identifier) @ignore (#match? @ignore "^(_|nil|true|false|iota)$"))
((type_identifier) @ignore (#match? @ignore "^(any|bool|byte|comparable|complex64|complex128|error|float32|float64|int|int8|int16|int32|int64|rune|string|uint|uint8|uint16|uint32|uint64|uintptr)$"))

; ---- imports
(import_spec path: (interpreted_string_literal (interpreted_string_literal_content) @import.module)) @import
(import_spec path: (raw_string_literal (raw_string_literal_content) @import.module)) @import
(import_spec name: (dot) @import.name path: (interpreted_string_literal (interpreted_string_literal_content) @import.module)) @import
