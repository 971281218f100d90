; Tags for Rust. Conventions: see indexer/tags.py.

; ---- definitions
(impl_item
  type: [
    (type_identifier) @name
    (generic_type type: (type_identifier) @name)
    (scoped_type_identifier name: (type_identifier) @name)
  ]
  body: (declaration_list) @body) @scope.impl
(impl_item
  body: (declaration_list
    (function_item name: (identifier) @name body: (block) @body) @definition.method))
(trait_item
  body: (declaration_list
    (function_item name: (identifier) @name body: (block) @body) @definition.method))
(trait_item
  body: (declaration_list (function_signature_item name: (identifier) @name) @definition.method))
(function_item name: (identifier) @name body: (block) @body) @definition.function
(function_signature_item name: (identifier) @name) @definition.function
(trait_item name: (type_identifier) @name body: (declaration_list) @body) @definition.interface
(struct_item name: (type_identifier) @name body: (field_declaration_list) @body) @definition.struct
(struct_item name: (type_identifier) @name) @definition.struct
(union_item name: (type_identifier) @name body: (field_declaration_list) @body) @definition.struct
(enum_item name: (type_identifier) @name body: (enum_variant_list) @body) @definition.enum
(type_item name: (type_identifier) @name) @definition.type
(mod_item name: (identifier) @name body: (declaration_list) @body) @definition.module
(mod_item name: (identifier) @name) @definition.module
(macro_definition name: (identifier) @name) @definition.macro
(const_item name: (identifier) @name) @definition.constant
(static_item name: (identifier) @name) @definition.constant
(field_declaration name: (field_identifier) @name) @definition.field

; ---- references
(call_expression function: (identifier) @reference.call)
(call_expression function: (field_expression field: (field_identifier) @reference.call))
(call_expression function: (scoped_identifier name: (identifier) @reference.call))
(call_expression function: (generic_function function: (identifier) @reference.call))
(call_expression
  function: (generic_function function: (scoped_identifier name: (identifier) @reference.call)))
(call_expression
  function: (generic_function function: (field_expression field: (field_identifier) @reference.call)))
(macro_invocation macro: (identifier) @reference.call)
(macro_invocation macro: (scoped_identifier name: (identifier) @reference.call))
(type_identifier) @reference.type
(field_expression field: (field_identifier) @reference.name)
(identifier) @reference.name

(parameter pattern: (identifier) @ignore)
(closure_parameters (identifier) @ignore)
(use_declaration) @ignore
(type_parameter name: (type_identifier) @ignore)
(mod_item name: (identifier) @ignore)

; ---- imports
(use_declaration argument: (identifier) @import.module) @import
(use_declaration argument: (scoped_identifier path: (_) @import.module name: (identifier) @import.name)) @import
(use_declaration
  argument: (use_as_clause path: (scoped_identifier path: (_) @import.module name: (identifier) @import.name))) @import
(use_declaration argument: (use_as_clause path: (identifier) @import.module)) @import
(use_declaration
  argument: (scoped_use_list
    path: (_) @import.module
    list: (use_list [
      (identifier) @import.name
      (self) @import.name
      (scoped_identifier) @import.name
      (use_as_clause path: (_) @import.name)
      (scoped_use_list path: (_) @import.name)
    ]))) @import
(use_declaration argument: (use_wildcard (_) @import.module "*" @import.name)) @import
(mod_item name: (identifier) @import.module !body) @import
