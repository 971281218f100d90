; Tags for Python. Conventions (read by indexer/tags.py):
;   @definition.KIND on the defining node, @name on its name, @body on the block a long definition
;   is split at; @reference.KIND on a name that is used; @ignore on names (or whole nodes) that are
;   not uses; @import on a statement, @import.module and @import.name inside it.
;   When several patterns capture the same name, the first pattern in the file wins.

; ---- definitions
(class_definition
  body: (block
    (function_definition name: (identifier) @name body: (block) @body) @definition.method))
(class_definition
  body: (block
    (decorated_definition
      definition: (function_definition name: (identifier) @name body: (block) @body) @definition.method)))
(function_definition name: (identifier) @name body: (block) @body) @definition.function
(class_definition name: (identifier) @name body: (block) @body) @definition.class

(class_definition
  body: (block (expression_statement (assignment left: (identifier) @name) @definition.field)))
(module
  (expression_statement
    (assignment left: (identifier) @name (#match? @name "^_*[A-Z][A-Z0-9_]*$")) @definition.constant))
(module (expression_statement (assignment left: (identifier) @name) @definition.variable))

; ---- references
(call function: (identifier) @reference.call)
(call function: (attribute attribute: (identifier) @reference.call))
(type (identifier) @reference.type)
(type (generic_type (identifier) @reference.type))
(type (attribute attribute: (identifier) @reference.type))
(class_definition superclasses: (argument_list (identifier) @reference.type))
(class_definition superclasses: (argument_list (attribute attribute: (identifier) @reference.type)))
(attribute attribute: (identifier) @reference.name)
(identifier) @reference.name

((identifier) @ignore (#match? @ignore "^(self|cls)$"))
(parameters (identifier) @ignore)
(lambda_parameters (identifier) @ignore)
(typed_parameter (identifier) @ignore)
(default_parameter name: (identifier) @ignore)
(typed_default_parameter name: (identifier) @ignore)
(list_splat_pattern (identifier) @ignore)
(dictionary_splat_pattern (identifier) @ignore)
(keyword_argument name: (identifier) @ignore)
(import_statement) @ignore
(import_from_statement) @ignore
(future_import_statement) @ignore

; ---- imports
(import_statement name: (dotted_name) @import.module) @import
(import_statement name: (aliased_import name: (dotted_name) @import.module)) @import
(import_from_statement module_name: (_) @import.module name: (dotted_name) @import.name) @import
(import_from_statement
  module_name: (_) @import.module
  name: (aliased_import name: (dotted_name) @import.name)) @import
(import_from_statement module_name: (_) @import.module (wildcard_import) @import.name) @import
