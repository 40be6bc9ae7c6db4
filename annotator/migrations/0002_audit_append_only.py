from django.db import migrations

FORBID = """
CREATE OR REPLACE FUNCTION annotator_audit_append_only() RETURNS trigger AS $$
BEGIN
    RAISE EXCEPTION 'audit events are append-only (% refused)', TG_OP;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER annotator_auditevent_append_only
    BEFORE UPDATE OR DELETE ON annotator_auditevent
    FOR EACH ROW EXECUTE FUNCTION annotator_audit_append_only();
"""

ALLOW = """
DROP TRIGGER IF EXISTS annotator_auditevent_append_only ON annotator_auditevent;
DROP FUNCTION IF EXISTS annotator_audit_append_only();
"""


class Migration(migrations.Migration):
    dependencies = [("annotator", "0001_initial")]
    operations = [migrations.RunSQL(FORBID, ALLOW)]
