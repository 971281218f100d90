; Tags for JavaScript (and JSX). Conventions: see indexer/tags.py.

; ---- definitions
(class_declaration name: (identifier) @name body: (class_body) @body) @definition.class
(class name: (identifier) @name body: (class_body) @body) @definition.class
(function_declaration name: (identifier) @name body: (statement_block) @body) @definition.function
(generator_function_declaration name: (identifier) @name body: (statement_block) @body) @definition.function
(function_expression name: (identifier) @name body: (statement_block) @body) @definition.function
(method_definition name: (_) @name body: (statement_block) @body) @definition.method
(variable_declarator
  name: (identifier) @name
  value: [
    (arrow_function body: (statement_block) @body)
    (function_expression body: (statement_block) @body)
    (generator_function body: (statement_block) @body)
  ]) @definition.function
(variable_declarator name: (identifier) @name value: (arrow_function)) @definition.function
(assignment_expression
  left: [
    (identifier) @name
    (member_expression property: (property_identifier) @name)
  ]
  right: [
    (arrow_function body: (statement_block) @body)
    (function_expression body: (statement_block) @body)
  ]) @definition.function
(pair
  key: (property_identifier) @name
  value: [
    (arrow_function body: (statement_block) @body)
    (function_expression body: (statement_block) @body)
  ]) @definition.function
(field_definition property: (property_identifier) @name) @definition.field

(program (lexical_declaration "const" (variable_declarator name: (identifier) @name) @definition.constant))
(program (export_statement
  (lexical_declaration "const" (variable_declarator name: (identifier) @name) @definition.constant)))
(program (lexical_declaration (variable_declarator name: (identifier) @name) @definition.variable))
(program (export_statement
  (lexical_declaration (variable_declarator name: (identifier) @name) @definition.variable)))
(program (variable_declaration (variable_declarator name: (identifier) @name) @definition.variable))

; ---- references
(call_expression function: (identifier) @reference.call)
(call_expression function: (member_expression property: (property_identifier) @reference.call))
(new_expression constructor: (identifier) @reference.type)
(new_expression constructor: (member_expression property: (property_identifier) @reference.type))
(class_heritage (identifier) @reference.type)
(class_heritage (member_expression property: (property_identifier) @reference.type))
(jsx_opening_element name: (identifier) @reference.type (#match? @reference.type "^[A-Z]"))
(jsx_self_closing_element name: (identifier) @reference.type (#match? @reference.type "^[A-Z]"))
(member_expression property: (property_identifier) @reference.name)
(identifier) @reference.name
(shorthand_property_identifier) @reference.name

(formal_parameters (identifier) @ignore)
(formal_parameters (assignment_pattern left: (identifier) @ignore))
(formal_parameters (rest_pattern (identifier) @ignore))
(arrow_function parameter: (identifier) @ignore)
(import_statement) @ignore
(jsx_opening_element name: (identifier) @ignore (#match? @ignore "^[a-z]"))
(jsx_self_closing_element name: (identifier) @ignore (#match? @ignore "^[a-z]"))
(jsx_closing_element) @ignore
((identifier) @ignore (#match? @ignore "^(undefined|require)$"))

; ---- imports
(import_statement source: (string (string_fragment) @import.module)) @import
(import_statement
  (import_clause (named_imports (import_specifier name: (_) @import.name)))
  source: (string (string_fragment) @import.module)) @import
(import_statement
  (import_clause (identifier) @import.name)
  source: (string (string_fragment) @import.module)) @import
(export_statement source: (string (string_fragment) @import.module)) @import
(export_statement
  (export_clause (export_specifier name: (_) @import.name))
  source: (string (string_fragment) @import.module)) @import
((call_expression
  function: (identifier) @_require
  arguments: (arguments . (string (string_fragment) @import.module) .)) @import
  (#eq? @_require "require"))
(call_expression
  function: (import)
  arguments: (arguments . (string (string_fragment) @import.module))) @import
