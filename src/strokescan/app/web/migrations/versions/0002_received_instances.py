"""received instances: one row per DICOM instance strokescan listen stored

Revision ID: 0002
Revises: 0001
"""

from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('received_instances',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('series_key', sa.String(length=24), nullable=False),
    sa.Column('sop_instance_sha256', sa.String(length=64), nullable=False),
    sa.Column('calling_ae', sa.String(length=16), nullable=False),
    sa.Column('sop_class_uid', sa.String(length=64), nullable=False),
    sa.Column('transfer_syntax_uid', sa.String(length=64), nullable=False),
    sa.Column('inbox_path', sa.String(length=500), nullable=False),
    sa.Column('n_bytes', sa.BigInteger(), nullable=False),
    sa.Column('received_at', sa.DateTime(), nullable=False),
    sa.Column('status', sa.Enum('RECEIVED', 'ANALYSED', 'SKIPPED', name='instancestatus', native_enum=False, length=16), nullable=False),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('sop_instance_sha256')
    )
    with op.batch_alter_table('received_instances', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_received_instances_received_at'), ['received_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_received_instances_series_key'), ['series_key'], unique=False)
        batch_op.create_index(batch_op.f('ix_received_instances_status'), ['status'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('received_instances', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_received_instances_status'))
        batch_op.drop_index(batch_op.f('ix_received_instances_series_key'))
        batch_op.drop_index(batch_op.f('ix_received_instances_received_at'))

    op.drop_table('received_instances')
